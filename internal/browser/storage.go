package browser

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/playwright-community/playwright-go"
)

// StorageState returns the context's cookies and localStorage in
// Playwright's storage-state JSON, for ContextOptions.StorageState.
func (c *Context) StorageState(ctx context.Context) ([]byte, error) {
	const op = "storage state"
	var st *playwright.StorageState
	err := c.do(ctx, op, contextCall, kindPlain, func(playwright.Page, float64) error {
		var err error
		st, err = c.bc.StorageState()
		return err
	})
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return b, nil
}

func parseStorageState(b []byte) (*playwright.OptionalStorageState, error) {
	if b == nil {
		return nil, nil
	}
	var st playwright.OptionalStorageState
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("%w: storage state: %v", ErrInvalidArgument, err)
	}
	return &st, nil
}
