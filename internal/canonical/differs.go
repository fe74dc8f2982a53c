package canonical

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// What an event's content is, for identity: two events with the same id are the same
// change if their type, keys and payload are equal. The id and source are what made
// them share the id; occurred_at is restamped when a source re-reads a change (an event
// without a time gets the time it was captured) and trace context differs per send, so
// neither makes a re-sent change a different one.
var identityIgnored = map[protoreflect.Name]bool{
	"id": true, "source": true, "occurred_at": true, "trace": true,
}

// maxDiffs bounds the differences Differs lists.
const maxDiffs = 4

// Differs reports how b's content differs from a's, field by field in declaration
// order ("inventoryLevel.onHand: \"1\" -> \"999\""); "" when they are the same change.
// The output is deterministic: replicas that compare the same events write the same
// text.
func Differs(a, b *eventv1.Event) string {
	var d differ
	d.message("", a.ProtoReflect(), b.ProtoReflect(), true)
	if d.more > 0 {
		d.out = append(d.out, fmt.Sprintf("and %d more", d.more))
	}
	return strings.Join(d.out, "; ")
}

// SameContent reports whether two encoded events are the same change (see Differs):
// identical bytes, or equal once decoded. An encoding that does not decode is only the
// same as identical bytes.
func SameContent(a, b []byte) (same bool, differs string) {
	if string(a) == string(b) {
		return true, ""
	}
	var ea, eb eventv1.Event
	if proto.Unmarshal(a, &ea) != nil || proto.Unmarshal(b, &eb) != nil {
		return false, "the encodings differ and one does not decode"
	}
	d := Differs(&ea, &eb)
	return d == "", d
}

type differ struct {
	out  []string
	more int
}

func (d *differ) add(path string, a, b string) {
	if len(d.out) == maxDiffs {
		d.more++
		return
	}
	d.out = append(d.out, path+": "+a+" -> "+b)
}

func (d *differ) message(path string, a, b protoreflect.Message, top bool) {
	fields := a.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		f := fields.Get(i)
		if top && identityIgnored[f.Name()] {
			continue
		}
		p := f.JSONName()
		if path != "" {
			p = path + "." + p
		}
		ha, hb := a.Has(f), b.Has(f)
		if !ha && !hb {
			continue
		}
		switch {
		case f.IsMap():
			d.mapField(p, f, a.Get(f).Map(), b.Get(f).Map())
		case f.IsList():
			d.list(p, f, a.Get(f).List(), b.Get(f).List())
		case f.Message() != nil:
			if ha != hb {
				d.add(p, presence(ha), presence(hb))
				continue
			}
			d.message(p, a.Get(f).Message(), b.Get(f).Message(), false)
		default:
			va, vb := a.Get(f), b.Get(f)
			if !va.Equal(vb) {
				d.add(p, scalar(f, va), scalar(f, vb))
			}
		}
	}
}

func (d *differ) list(path string, f protoreflect.FieldDescriptor, a, b protoreflect.List) {
	n := max(a.Len(), b.Len())
	for i := 0; i < n; i++ {
		p := path + "[" + strconv.Itoa(i) + "]"
		switch {
		case i >= a.Len():
			d.add(p, "absent", "present")
		case i >= b.Len():
			d.add(p, "present", "absent")
		case f.Message() != nil:
			d.message(p, a.Get(i).Message(), b.Get(i).Message(), false)
		case !a.Get(i).Equal(b.Get(i)):
			d.add(p, scalar(f, a.Get(i)), scalar(f, b.Get(i)))
		}
	}
}

// mapField compares string-keyed maps (the event's keys) in key order.
func (d *differ) mapField(path string, f protoreflect.FieldDescriptor, a, b protoreflect.Map) {
	keys := map[string]protoreflect.MapKey{}
	collect := func(m protoreflect.Map) {
		m.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
			keys[k.String()] = k
			return true
		})
	}
	collect(a)
	collect(b)
	vf := f.MapValue()
	for _, name := range slices.Sorted(maps.Keys(keys)) {
		k := keys[name]
		p := path + "." + name
		va, oka := a.Get(k), a.Has(k)
		vb, okb := b.Get(k), b.Has(k)
		switch {
		case !oka:
			d.add(p, "absent", scalar(vf, vb))
		case !okb:
			d.add(p, scalar(vf, va), "absent")
		case !va.Equal(vb):
			d.add(p, scalar(vf, va), scalar(vf, vb))
		}
	}
}

func presence(has bool) string {
	if has {
		return "set"
	}
	return "unset"
}

// scalar renders a value for a difference, quoted and cut at 40 bytes.
func scalar(f protoreflect.FieldDescriptor, v protoreflect.Value) string {
	var s string
	switch f.Kind() {
	case protoreflect.StringKind:
		s = v.String()
	case protoreflect.BytesKind:
		return fmt.Sprintf("%d bytes", len(v.Bytes()))
	case protoreflect.EnumKind:
		if ev := f.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return string(ev.Name())
		}
		return strconv.Itoa(int(v.Enum()))
	default:
		return fmt.Sprint(v.Interface())
	}
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return strconv.Quote(s)
}
