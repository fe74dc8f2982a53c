package partner

import (
	"context"
	"time"
)

// The views interface of controlplane/views (CONTRACT.md), copied here so this package
// builds before that one is merged; *views.Views satisfies it.

// Level is the inventory of one SKU at one location.
type Level struct {
	SKU, Location                               string
	OnHand, Allocated, Available, UnitOfMeasure string
	Seq                                         uint64
	At                                          time.Time
}

// PriceEntry is one price of a SKU in a price list.
type PriceEntry struct {
	SKU, PriceList, Currency, Amount string
	ValidFrom, ValidTo               time.Time
	Seq                              uint64
	At                               time.Time
}

// ItemEntry is one catalog item.
type ItemEntry struct {
	SKU, Name, Description, UnitOfMeasure, GTIN string
	Seq                                         uint64
	At                                          time.Time
}

// Reader is what the partner API reads: current state derived from the ledger.
type Reader interface {
	// Seq is the ledger seq the views reflect.
	Seq() uint64
	// WaitFor blocks until Seq() >= seq or ctx ends.
	WaitFor(ctx context.Context, seq uint64) error
	Levels(skus []string, locations []string) []Level
	Prices(skus []string, priceList string) []PriceEntry
	Items(after string, limit int, match func(sku string) bool) (items []ItemEntry, next string)
}
