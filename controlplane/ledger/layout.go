package ledger

// Layout is the on-disk layout version of the ledger this build reads and writes
// (ledgerFormat, log.go). `crossdock version` prints it.
const Layout = ledgerFormat
