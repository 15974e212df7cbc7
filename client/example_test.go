package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/browserbroker/broker/client"
	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
)

// The examples run against a real broker started by TestMain at brokerAddr,
// and a local site at siteURL.

// Lease a browser, load a page, read texts from it and give it back.
func ExampleClient_Acquire() {
	ctx := context.Background()
	c, err := client.Dial(brokerAddr)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	l, err := c.Acquire(ctx, client.AcquireOptions{
		TTL:         time.Minute,
		WaitTimeout: 30 * time.Second,
		Labels:      map[string]string{"job": "example"},
		OnQueued:    func(pos int) { log.Printf("queued at %d", pos) },
	})
	if err != nil {
		log.Fatal(err) // a gRPC status, such as RESOURCE_EXHAUSTED
	}
	// Give the lease back on every path; a second Release is a no-op.
	defer l.Release(context.WithoutCancel(ctx))

	nav, err := l.Navigate(ctx, siteURL)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(nav.GetStatus(), nav.GetTitle())

	items, err := l.Text(ctx, "li.item")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(items)

	reason, err := l.Release(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(reason)
	// Output:
	// 200 Test Site
	// [item 1 item 2 item 3]
	// RECLAIM_REASON_RELEASED
}

// Decode the value of a JavaScript function into a Go type.
func ExampleEvaluateAs() {
	ctx := context.Background()
	c, err := client.Dial(brokerAddr)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	l, err := c.Acquire(ctx, client.AcquireOptions{
		Context: &brokerv1.ContextOptions{Viewport: &brokerv1.Viewport{Width: 800, Height: 600}},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Release(context.WithoutCancel(ctx))
	if _, err := l.Navigate(ctx, siteURL); err != nil {
		log.Fatal(err)
	}

	type summary struct {
		Title string   `json:"title"`
		Items []string `json:"items"`
		Width int      `json:"width"`
	}
	// The function receives the argument, sent as JSON.
	s, err := client.EvaluateAs[summary](ctx, l, `(sel) => ({
		title: document.title,
		items: [...document.querySelectorAll(sel)].map(e => e.textContent),
		width: innerWidth,
	})`, "li.item")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%q %q %d\n", s.Title, s.Items, s.Width)

	n, err := client.EvaluateAs[int](ctx, l, "(xs) => xs.reduce((a, b) => a + b, 0)", []int{1, 2, 3})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(n)
	// Output:
	// "Test Site" ["item 1" "item 2" "item 3"] 800
	// 6
}

// Notice that the broker ended a lease (here an operator revoked it), and
// why. Page commands on the lease then fail at once with a *RevokedError.
func ExampleLease_Done() {
	ctx := context.Background()
	c, err := client.Dial(brokerAddr)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	l, err := c.Acquire(ctx, client.AcquireOptions{TTL: time.Minute})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Release(context.WithoutCancel(ctx))

	// An operator (here this client's admin helper) revokes the lease.
	if _, err := c.Revoke(ctx, l.ID(), "maintenance"); err != nil {
		log.Fatal(err)
	}

	select {
	case <-l.Done():
		reason, msg := l.Reason()
		fmt.Println("lease ended:", reason, msg)
	case <-time.After(10 * time.Second):
		log.Fatal("still held")
	}

	_, err = l.Navigate(ctx, siteURL)
	var revoked *client.RevokedError
	if errors.As(err, &revoked) {
		fmt.Println("navigate refused:", revoked.Reason)
	}
	// Output:
	// lease ended: RECLAIM_REASON_REVOKED maintenance
	// navigate refused: RECLAIM_REASON_REVOKED
}

// A sticky session keeps its cookies and localStorage from one lease to the
// next; its generation rises with every grant.
func ExampleAcquireOptions_sessionKey() {
	ctx := context.Background()
	c, err := client.Dial(brokerAddr)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	for range 2 {
		l, err := c.Acquire(ctx, client.AcquireOptions{SessionKey: "example-account"})
		if err != nil {
			log.Fatal(err)
		}
		cookies, err := l.Cookies(ctx)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("generation", l.Generation(), "cookies", len(cookies), "warm", l.Granted().GetSessionWarm())
		err = l.SetCookies(ctx, &brokerv1.Cookie{Name: "sid", Value: "logged-in", Url: siteURL})
		if err != nil {
			log.Fatal(err)
		}
		if _, err := l.Release(ctx); err != nil {
			log.Fatal(err)
		}
	}
	// Output:
	// generation 1 cookies 0 warm false
	// generation 2 cookies 1 warm true
}
