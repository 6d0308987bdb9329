/// Which build of Legato this is (`legato_build_info`, and what a future `legato --version` prints).
public enum LegatoBuild {
    public static let version = "0.1.0"
}
