import Foundation

/// A checkpoint to restore: its context, and its pages as layers (an epoch's pages may come in several
/// layers, disjoint, next to each other) — the full checkpoint it builds on
/// first, each increment after it; a later layer's page replaces an earlier one's.
public struct RestoreSource {
    public struct Layer {
        public let epoch: UInt64
        public let pageRuns: [(UInt64, Int)]   // [address, pages] in pagesFile order
        public let zeroRuns: [(UInt64, Int)]
        public let pages: PageBytes

        public init(epoch: UInt64, pageRuns: [(UInt64, Int)], zeroRuns: [(UInt64, Int)], pages: PageBytes) {
            self.epoch = epoch
            self.pageRuns = pageRuns
            self.zeroRuns = zeroRuns
            self.pages = pages
        }
    }

    /// Where a layer's page contents are, back to back in pageRuns order.
    public enum PageBytes {
        case pagesFile(String)         // a local checkpoint's pages.bin (PagesFile, each page checked)
        case file(String)              // the same in format 1: raw pages, unchecked
        case memory(Data)
        case streamed(StreamedPages)   // arriving from the log nodes while PROG runs
    }

    public let image: ProcessImage
    public let layers: [Layer]
    /// How long reading the checkpoint took before the agent started (its index, or the logs).
    public var readMillis: Double = 0
    /// Starts bringing the pages in (a streamed restore's log replay), called once PROG runs again:
    /// until then the disk and the cores go to rebuilding PROG; a page needed before is fetched alone.
    public var startStreaming: (() -> Void)?
    /// Drops the address spaces an earlier incarnation of the run left on memory nodes (those the
    /// restore found there): called once the restored run no longer reads from them.
    public var releaseEarlierSpaces: (() -> Void)?

    public init(image: ProcessImage, layers: [Layer]) {
        self.image = image
        self.layers = layers
    }

    public var pageCount: Int { layers.reduce(0) { $0 + $1.pageRuns.reduce(0) { $0 + $1.1 } } }
}
