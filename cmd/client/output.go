package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// codeNames are the canonical names of the gRPC codes, as in the gRPC spec
// (codes.Code.String gives the Go spelling, such as ResourceExhausted).
var codeNames = [...]string{
	codes.OK:                 "OK",
	codes.Canceled:           "CANCELLED",
	codes.Unknown:            "UNKNOWN",
	codes.InvalidArgument:    "INVALID_ARGUMENT",
	codes.DeadlineExceeded:   "DEADLINE_EXCEEDED",
	codes.NotFound:           "NOT_FOUND",
	codes.AlreadyExists:      "ALREADY_EXISTS",
	codes.PermissionDenied:   "PERMISSION_DENIED",
	codes.ResourceExhausted:  "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION",
	codes.Aborted:            "ABORTED",
	codes.OutOfRange:         "OUT_OF_RANGE",
	codes.Unimplemented:      "UNIMPLEMENTED",
	codes.Internal:           "INTERNAL",
	codes.Unavailable:        "UNAVAILABLE",
	codes.DataLoss:           "DATA_LOSS",
	codes.Unauthenticated:    "UNAUTHENTICATED",
}

func codeName(c codes.Code) string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return "CODE_" + strconv.Itoa(int(c))
}

// rpcError turns the error of a call into the message and exit code of the
// convention: "client: <what>: <code>: <message>", exit 10 + code.
func rpcError(what string, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		// Context errors raised on our side before the call got a status.
		st = status.FromContextError(err)
	}
	return &exitError{
		code: exitRPC + int(st.Code()),
		msg:  fmt.Sprintf("client: %s: %s: %s", what, codeName(st.Code()), st.Message()),
	}
}

// enumName is the name of an enum value without its type prefix: RELEASED,
// not RECLAIM_REASON_RELEASED. The prefix is taken from the zero value,
// which buf lint names <ENUM>_UNSPECIFIED.
func enumName(e protoreflect.Enum) string {
	values := e.Descriptor().Values()
	v := values.ByNumber(e.Number())
	if v == nil {
		return strconv.Itoa(int(e.Number()))
	}
	name := string(v.Name())
	if zero := values.ByNumber(0); zero != nil {
		prefix := strings.TrimSuffix(string(zero.Name()), "UNSPECIFIED")
		name = strings.TrimPrefix(name, prefix)
	}
	return name
}

var jsonOptions = protojson.MarshalOptions{UseProtoNames: true, EmitDefaultValues: true}

// protoJSON marshals an API message for embedding in a JSON document.
func protoJSON(m proto.Message) json.RawMessage {
	b, err := jsonOptions.Marshal(m)
	if err != nil {
		// Only invalid UTF-8 in a string field gets here; keep the document valid.
		b, _ = json.Marshal(map[string]string{"marshal_error": err.Error()})
	}
	return b
}

// writeJSON writes one indented JSON document: protojson for API messages,
// encoding/json for anything else.
func writeJSON(w io.Writer, v any) error {
	var raw []byte
	if m, ok := v.(proto.Message); ok {
		raw = protoJSON(m)
	} else {
		var err error
		if raw, err = json.Marshal(v); err != nil {
			return fmt.Errorf("encode JSON: %w", err)
		}
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return fmt.Errorf("indent JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// formatLabels prints labels as sorted k=v pairs, "-" when there are none.
func formatLabels(labels map[string]string) string {
	if len(labels) == 0 {
		return "-"
	}
	pairs := make([]string, 0, len(labels))
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		pairs = append(pairs, k+"="+labels[k])
	}
	return strings.Join(pairs, ",")
}

// since is the time from ts to now in whole seconds, "-" when ts is unset.
func since(now time.Time, ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return max(now.Sub(ts.AsTime()), 0).Round(time.Second).String()
}

// formatTime prints a timestamp with its distance from now.
func formatTime(now time.Time, ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	t := ts.AsTime()
	d := t.Sub(now).Round(time.Second)
	rel := "in " + d.String()
	if d < 0 {
		rel = (-d).String() + " ago"
	}
	return fmt.Sprintf("%s (%s)", t.Local().Format(time.RFC3339), rel)
}
