package outbox

// Layout is the on-disk layout version of an outbox this build writes: 1 kept one
// Badger entry per record (converted on Open, legacy.go), 2 keeps chunks of records
// (chunk.go). `crossdock version` prints it.
const Layout = 2
