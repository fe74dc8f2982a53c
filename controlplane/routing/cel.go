package routing

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
	"github.com/google/cel-go/ext"
	"github.com/google/cel-go/interpreter"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// Limits of CEL expressions. They are constants of the build, not of a document, so a
// document cannot raise them.
const (
	// CostLimit bounds the runtime cost of one evaluation (CEL's cost units: about one per
	// field access, comparison or list element, more for string work). A mapping of a few
	// dozen fields costs under 100; a runaway comprehension is stopped here.
	CostLimit = 100_000
	// EvalTimeout bounds the wall time of one evaluation. The cost limit is the real
	// bound (a breach is the same on every node and every retry); the timeout is a
	// backstop well above what the cost limit allows, so that a loaded node reports the
	// cost breach, not a timeout.
	EvalTimeout = time.Second
	// MaxExpressionBytes bounds the source text of one expression.
	MaxExpressionBytes = 16 << 10
	// MaxPayloadBytes bounds the JSON a mapping may produce.
	MaxPayloadBytes = 1 << 20
	// interruptEvery is how many comprehension iterations pass between checks of the
	// evaluation's deadline.
	interruptEvery = 100
)

var (
	envOnce sync.Once
	celEnv  *cel.Env
	envErr  error
)

// Env is the CEL environment of filters and mappings: the variables event
// (crossdock.event.v1.Event) and committed (crossdock.event.v1.CommittedEvent), CEL's
// standard library, optional types and the strings, math, lists, sets and encoders
// extensions.
func Env() (*cel.Env, error) {
	envOnce.Do(func() {
		celEnv, envErr = cel.NewEnv(
			cel.Types(&eventv1.CommittedEvent{}),
			cel.Variable("event", cel.ObjectType("crossdock.event.v1.Event")),
			cel.Variable("committed", cel.ObjectType("crossdock.event.v1.CommittedEvent")),
			cel.OptionalTypes(),
			cel.CrossTypeNumericComparisons(true),
			ext.Strings(),
			ext.Math(),
			ext.Lists(),
			ext.Sets(),
			ext.Encoders(),
			cel.ParserExpressionSizeLimit(MaxExpressionBytes),
			cel.ParserRecursionLimit(100),
		)
	})
	return celEnv, envErr
}

// compiled holds a route's programs.
type compiled struct {
	filter  cel.Program // nil when the route has no filter
	mapping cel.Program // nil: the canonical event as JSON
}

func compileRoute(d *Document) (*compiled, []*FieldError) {
	c := &compiled{}
	var errs []*FieldError
	add := func(path string, err error) {
		errs = append(errs, &FieldError{Doc: d.Ref(), Path: path, Msg: err.Error()})
	}
	if f := d.Route.Filter; strings.TrimSpace(f) != "" {
		prg, err := compileExpr(f, true)
		if err != nil {
			add("spec.filter", err)
		}
		c.filter = prg
	}
	if m := d.Route.Mapping; strings.TrimSpace(m) != "" {
		prg, err := compileExpr(m, false)
		if err != nil {
			add("spec.mapping", err)
		}
		c.mapping = prg
	}
	return c, errs
}

func compileExpr(src string, wantBool bool) (cel.Program, error) {
	if len(src) > MaxExpressionBytes {
		return nil, fmt.Errorf("expression is %d bytes, more than %d", len(src), MaxExpressionBytes)
	}
	env, err := Env()
	if err != nil {
		return nil, fmt.Errorf("CEL environment: %w", err)
	}
	ast, iss := env.Compile(src)
	if iss.Err() != nil {
		return nil, fmt.Errorf("CEL: %s", strings.TrimPrefix(iss.Err().Error(), "ERROR: <input>:"))
	}
	if wantBool {
		if t := ast.OutputType(); !t.IsExactType(cel.BoolType) && !t.IsExactType(cel.DynType) {
			return nil, fmt.Errorf("CEL: a filter must be a bool expression, this one is %s", t)
		}
	}
	prg, err := env.Program(ast,
		cel.CostLimit(CostLimit),
		cel.InterruptCheckFrequency(interruptEvery),
		cel.EvalOptions(cel.OptOptimize),
	)
	if err != nil {
		return nil, fmt.Errorf("CEL: %w", err)
	}
	return prg, nil
}

// Errors of evaluation. An *EvalError wraps one of them, or CEL's own error.
var (
	// ErrCostLimit means an expression exceeded CostLimit.
	ErrCostLimit = errors.New("CEL cost limit exceeded")
	// ErrTimeout means an expression ran longer than EvalTimeout (or its context ended).
	ErrTimeout = errors.New("CEL evaluation timed out")
	// ErrPayload means a mapping's value has no JSON form, or its JSON is too large.
	ErrPayload = errors.New("mapping result is not a valid payload")
)

// EvalError is a failed filter or mapping. The delivery engine dead-letters the event
// with Error() as the reason; `crossdock routes test` shows the same text.
type EvalError struct {
	Route string // route name
	Stage string // "filter" or "mapping"
	Err   error
}

func (e *EvalError) Error() string {
	return fmt.Sprintf("route %s: %s: %v", e.Route, e.Stage, e.Err)
}

func (e *EvalError) Unwrap() error { return e.Err }

// evaluate runs prg on ce with the cost limit and the timeout.
func evaluate(ctx context.Context, prg cel.Program, ce *eventv1.CommittedEvent) (ref.Val, error) {
	ctx, cancel := context.WithTimeout(ctx, EvalTimeout)
	defer cancel()
	ev := ce.GetEvent()
	if ev == nil {
		ev = &eventv1.Event{}
	}
	out, _, err := prg.ContextEval(ctx, map[string]any{"event": ev, "committed": ce})
	if err != nil {
		var ce interpreter.EvalCancelledError
		if errors.As(err, &ce) {
			if ce.Cause == interpreter.CostLimitExceeded {
				return nil, fmt.Errorf("%w (limit %d)", ErrCostLimit, CostLimit)
			}
			return nil, fmt.Errorf("%w after %s", ErrTimeout, EvalTimeout)
		}
		if errors.Is(err, interpreter.InterruptError{}) || ctx.Err() != nil {
			return nil, fmt.Errorf("%w after %s", ErrTimeout, EvalTimeout)
		}
		return nil, err
	}
	return out, nil
}

var protoJSON = protojson.MarshalOptions{UseProtoNames: true}

// EventJSON is the default payload of a route without a mapping: the canonical event
// (protojson with the .proto field names, e.g. inventory_level.on_hand), compact.
func EventJSON(ev *eventv1.Event) ([]byte, error) {
	return messageJSON(ev)
}

// messageJSON is protojson output made deterministic: protojson inserts random spaces,
// so compact it.
func messageJSON(m proto.Message) ([]byte, error) {
	b, err := protoJSON.Marshal(m)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// payloadJSON turns a mapping's value into JSON. Maps need string keys; doubles must be
// finite; timestamps become RFC 3339 strings, durations "1.5s", bytes base64, messages
// their protojson form.
func payloadJSON(v ref.Val) ([]byte, error) {
	g, err := toGo(v, 0)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(g)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxPayloadBytes {
		return nil, fmt.Errorf("payload is %d bytes, more than %d", len(b), MaxPayloadBytes)
	}
	return b, nil
}

func toGo(v ref.Val, depth int) (any, error) {
	if depth > 64 {
		return nil, errors.New("nested more than 64 levels")
	}
	switch x := v.(type) {
	case types.Null:
		return nil, nil
	case types.Bool:
		return bool(x), nil
	case types.Int:
		return int64(x), nil
	case types.Uint:
		return uint64(x), nil
	case types.Double:
		f := float64(x)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("%v has no JSON form", f)
		}
		return f, nil
	case types.String:
		return string(x), nil
	case types.Bytes:
		return []byte(x), nil
	case types.Timestamp:
		return x.Time.UTC().Format(time.RFC3339Nano), nil
	case types.Duration:
		return durationJSON(x.Duration), nil
	case *types.Optional:
		if !x.HasValue() {
			return nil, nil
		}
		return toGo(x.GetValue(), depth+1)
	case *types.Err:
		return nil, x
	}
	if m, ok := v.(traits.Mapper); ok {
		out := map[string]any{}
		it := m.Iterator()
		for it.HasNext() == types.True {
			k := it.Next()
			ks, ok := k.(types.String)
			if !ok {
				return nil, fmt.Errorf("map key %v is %s; JSON object keys must be strings", k, k.Type().TypeName())
			}
			e, err := toGo(m.Get(k), depth+1)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", string(ks), err)
			}
			out[string(ks)] = e
		}
		return out, nil
	}
	if l, ok := v.(traits.Lister); ok {
		var out []any
		it := l.Iterator()
		for i := 0; it.HasNext() == types.True; i++ {
			e, err := toGo(it.Next(), depth+1)
			if err != nil {
				return nil, fmt.Errorf("[%d]: %w", i, err)
			}
			out = append(out, e)
		}
		if out == nil {
			out = []any{}
		}
		return out, nil
	}
	switch m := v.Value().(type) {
	case *timestamppb.Timestamp:
		return m.AsTime().UTC().Format(time.RFC3339Nano), nil
	case *durationpb.Duration:
		return durationJSON(m.AsDuration()), nil
	case proto.Message:
		b, err := messageJSON(m)
		if err != nil {
			return nil, err
		}
		return json.RawMessage(b), nil
	}
	return nil, fmt.Errorf("a value of type %s has no JSON form", v.Type().TypeName())
}

// durationJSON writes a duration as protojson does: seconds with an "s".
func durationJSON(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s"
}
