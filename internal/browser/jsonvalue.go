package browser

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net/url"
	"time"
)

// maxJSONDepth bounds the nesting of an Evaluate result; playwright-go turns
// a cyclic JavaScript value into a cyclic Go value, and this is what stops
// the walk.
const maxJSONDepth = 200

var errTooDeep = errors.New("result is nested too deeply or cyclic")

// resultJSON renders a value playwright-go decoded from page.evaluate as
// JSON, the way JSON.stringify would where they differ from encoding/json:
// NaN and ±Infinity become null, Dates ISO strings. A thrown-then-returned
// Error object becomes its message. Undefined is "null".
func resultJSON(v any) (string, error) {
	clean, err := jsonValue(v, 0)
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(clean); err != nil {
		return "", err
	}
	return string(bytes.TrimSuffix(buf.Bytes(), []byte{'\n'})), nil
}

func jsonValue(v any, depth int) (any, error) {
	if depth > maxJSONDepth {
		return nil, errTooDeep
	}
	switch x := v.(type) {
	case nil, bool, string, int:
		return x, nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, nil
		}
		if x == 0 {
			return 0, nil // -0 too, as JSON.stringify
		}
		return x, nil
	case *url.URL:
		return x.String(), nil
	case *big.Int:
		return json.Number(x.String()), nil
	case time.Time:
		return x.UTC().Format("2006-01-02T15:04:05.000Z"), nil
	case error:
		return shortMessage(x), nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			c, err := jsonValue(e, depth+1)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			c, err := jsonValue(e, depth+1)
			if err != nil {
				return nil, err
			}
			out[k] = c
		}
		return out, nil
	default:
		// Typed arrays and anything newer: let encoding/json try.
		if _, err := json.Marshal(x); err != nil {
			return nil, fmt.Errorf("result of type %T is not representable as JSON", x)
		}
		return x, nil
	}
}
