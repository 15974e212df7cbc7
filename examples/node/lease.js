#!/usr/bin/env node
'use strict';
// lease.js: lease a browser from the broker, load a page, print the texts of
// some elements, save a screenshot, and give the browser back.
//
//   npm ci
//   node lease.js --addr localhost:7070 --url https://example.com --text h1 --screenshot out.png
//
// Exit status: 0 when all went well and our release ended the lease; 2 for
// a usage error; 3 when the lease ended for another reason (revoked by an
// operator, expired, the broker shutting down...); 10 + the gRPC code when a
// call failed (18: RESOURCE_EXHAUSTED, no capacity in time; 24: UNAVAILABLE);
// 1 otherwise. Ctrl-C ends the stream, and the broker reclaims the lease.

const fs = require('node:fs');
const { parseArgs } = require('node:util');
const broker = require('./broker');

const USAGE = `usage: node lease.js --url URL [options]

  --addr HOST:PORT      broker address (default localhost:7070)
  --url URL             page to load (http or https)
  --text SELECTOR       print the inner texts of the matching elements (repeatable)
  --screenshot FILE     save a PNG screenshot of the page
  --ttl DURATION        idle TTL of the lease, renewed at a third of it (default 30s)
  --wait DURATION       longest wait in the broker's queue (default: the broker's)
  --label KEY=VALUE     label shown to operators (repeatable; default example=node)
  --hold DURATION       hold the lease this long after loading the page
`;

function usage(msg) {
  process.stderr.write(`lease.js: ${msg}\n${USAGE}`);
  process.exit(2);
}

function parse(argv) {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        addr: { type: 'string', default: 'localhost:7070' },
        url: { type: 'string' },
        text: { type: 'string', multiple: true, default: [] },
        screenshot: { type: 'string' },
        ttl: { type: 'string', default: '30s' },
        wait: { type: 'string', default: '0' },
        label: { type: 'string', multiple: true, default: [] },
        hold: { type: 'string', default: '0' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    usage(err.message);
  }
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  if (!values.url) usage('--url is required');
  const labels = {};
  for (const kv of values.label.length ? values.label : ['example=node']) {
    const i = kv.indexOf('=');
    if (i < 1) usage(`--label ${kv}: want KEY=VALUE`);
    labels[kv.slice(0, i)] = kv.slice(i + 1);
  }
  try {
    return {
      ...values,
      labels,
      ttlMs: broker.parseDuration(values.ttl),
      waitMs: broker.parseDuration(values.wait),
      holdMs: broker.parseDuration(values.hold),
    };
  } catch (err) {
    return usage(err.message);
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function main() {
  const opts = parse(process.argv.slice(2));
  const clients = broker.connect(opts.addr);
  try {
    return await leaseAndWork(clients, opts);
  } catch (err) {
    // A failed acquire, or a failure while the lease was held.
    const code = typeof err.code === 'number' ? err.code : null;
    process.stderr.write(`lease.js: ${code === null ? err.message : `${broker.status[code]}: ${err.details}`}\n`);
    return code === null ? 1 : 10 + code;
  } finally {
    clients.close();
  }
}

async function leaseAndWork(clients, opts) {
  const lease = await broker.acquire(clients.lease, {
    ttlMs: opts.ttlMs,
    waitMs: opts.waitMs,
    labels: opts.labels,
    onQueued: (position) => console.log(`queued: position ${position}`),
  });
  console.log(`granted: lease ${lease.id}, idle TTL ${lease.ttlMs / 1000}s`);

  let failure = null;
  try {
    await work(clients.page, lease, opts);
  } catch (err) {
    // A step cut short because the lease ended (LeaseEndedError, or the
    // broker's ABORTED / FAILED_PRECONDITION for a reclaimed lease) is
    // reported by the reason below; anything else is a failure of ours.
    const reclaimed = err instanceof broker.LeaseEndedError ||
      err.code === broker.status.ABORTED || err.code === broker.status.FAILED_PRECONDITION;
    if (!reclaimed) failure = err;
  }

  // Give the lease back, also after a failed step. When the lease has
  // already ended, release() only tells why.
  const end = await lease.release();
  const reason = broker.reasonName(end.reason);
  console.log(`lease ${lease.id} ended: ${end.reason === null ? 'stream failed' : reason}` +
    (end.message ? ` (${end.message})` : ''));
  if (end.reason === null) throw end.error;
  if (failure) throw failure;
  return reason === 'RELEASED' ? 0 : 3;
}

// work drives the page. Every step is guarded: when the lease ends under it
// (an operator's revoke, the TTL, a crash), the step throws at once.
async function work(page, lease, opts) {
  const id = lease.id;
  const nav = await lease.guard(broker.call(page, 'Navigate', { lease_id: id, url: opts.url }));
  console.log(`navigated: ${nav.status} ${nav.url} title ${JSON.stringify(nav.title)}`);

  if (opts.holdMs > 0) {
    console.log(`holding: ${opts.holdMs / 1000}s`);
    await lease.guard(sleep(opts.holdMs));
  }

  for (const selector of opts.text) {
    const { texts } = await lease.guard(broker.call(page, 'Text', { lease_id: id, selector }));
    for (const text of texts) console.log(`text ${selector}: ${text}`);
  }

  if (opts.screenshot) {
    const shot = await lease.guard(broker.call(page, 'Screenshot', { lease_id: id }));
    fs.writeFileSync(opts.screenshot, shot.data);
    console.log(`screenshot: ${opts.screenshot} (${shot.data.length} bytes)`);
  }
}

// Exit explicitly: a --hold cut short by the end of the lease leaves a timer behind.
main().then((code) => process.exit(code));
