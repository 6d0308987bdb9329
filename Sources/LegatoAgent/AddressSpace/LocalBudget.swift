/// The run's one local memory budget, shared by every address space the agent manages: how many
/// managed pages are resident now, at most so far, and may be.
final class LocalBudget {
    let pages: Int
    private(set) var residentPages = 0
    private(set) var peakResidentPages = 0

    init(pages: Int) { self.pages = pages }

    func noteResident(_ delta: Int) {
        residentPages += delta
        if residentPages > peakResidentPages { peakResidentPages = residentPages }
    }
}
