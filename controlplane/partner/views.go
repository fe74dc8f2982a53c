package partner

import "github.com/crossdock/crossdock/controlplane/views"

// What the partner API reads: the views every node derives from the ledger
// (controlplane/views). The names are the views package's own.
type (
	// Level is the inventory of one SKU at one location.
	Level = views.Level
	// PriceEntry is one price of a SKU in a price list.
	PriceEntry = views.PriceEntry
	// ItemEntry is one catalog item.
	ItemEntry = views.ItemEntry
	// Reader is current state derived from the ledger; *views.Views implements it.
	Reader = views.Reader
)
