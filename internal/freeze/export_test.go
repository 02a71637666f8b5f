package freeze

// AdvisoryKey is the advisory lock that serialises freezes and unfreezes, for tests
// that make them wait.
const AdvisoryKey = advisoryKey
