'use strict';
// A small client for the browser-lease broker, shared by lease.js and the
// tests. It loads ../../proto at run time (no generated code) and turns the
// Lease stream into a Lease object: an id, a promise of the reason the lease
// ended, release(), and automatic renewal at a third of the idle TTL.
//
// Messages use the .proto's own field names (keepCase: lease_id, not
// leaseId), enum values by name ('RECLAIM_REASON_RELEASED'), 64-bit integers
// as strings, and `msg.msg` names the member of a oneof that is set.

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_DIR = path.join(__dirname, '..', '..', 'proto');

// loadApi returns the browserbroker.v1 package: LeaseService, PageService and
// AdminService client constructors. google/protobuf/duration.proto and
// timestamp.proto need no include path: protobufjs (under proto-loader)
// bundles the well-known types and resolves those imports itself.
function loadApi(protoDir = PROTO_DIR) {
  const def = protoLoader.loadSync('browserbroker/v1/broker.proto', {
    includeDirs: [protoDir],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(def).browserbroker.v1;
}

// connect returns the three service clients on one plaintext channel to addr
// ("host:port"), and close() for the channel.
function connect(addr, api = loadApi()) {
  const creds = grpc.credentials.createInsecure();
  const channel = new grpc.Channel(addr, creds, {});
  const opts = { channelOverride: channel };
  return {
    lease: new api.LeaseService(addr, creds, opts),
    page: new api.PageService(addr, creds, opts),
    admin: new api.AdminService(addr, creds, opts),
    close: () => channel.close(),
  };
}

// call runs a unary RPC and returns a promise of its response, such as
// call(clients.page, 'Navigate', { lease_id, url }).
function call(client, method, request, { deadlineMs } = {}) {
  const options = deadlineMs ? { deadline: Date.now() + deadlineMs } : {};
  return new Promise((resolve, reject) => {
    client[method](request, options, (err, response) => (err ? reject(err) : resolve(response)));
  });
}

// Durations: milliseconds here, google.protobuf.Duration on the wire.
function toDuration(ms) {
  if (!ms) return null; // unset: the broker's default
  return { seconds: Math.floor(ms / 1000), nanos: Math.round(ms % 1000) * 1e6 };
}

function fromDuration(d) {
  return d ? Number(d.seconds) * 1000 + Math.round(d.nanos / 1e6) : 0;
}

// parseDuration reads "500ms", "30s", "2m", "1h" or plain seconds ("1.5").
function parseDuration(s) {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(String(s).trim());
  if (!m) throw new Error(`bad duration ${JSON.stringify(s)}: want such as 500ms, 30s, 2m`);
  const unit = { ms: 1, s: 1000, m: 60000, h: 3600000 }[m[2] || 's'];
  return Math.round(Number(m[1]) * unit);
}

// reasonName turns 'RECLAIM_REASON_REVOKED' into 'REVOKED'. A reason this
// client does not know (added to the API later) arrives as a number.
function reasonName(reason) {
  if (typeof reason === 'string') return reason.replace(/^RECLAIM_REASON_/, '');
  return `UNKNOWN(${reason})`;
}

// LeaseEndedError is what Lease.guard throws when the lease ends before the
// guarded work does.
class LeaseEndedError extends Error {
  constructor(end) {
    super(`lease ended: ${reasonName(end.reason)}${end.message ? ` (${end.message})` : ''}`);
    this.name = 'LeaseEndedError';
    this.end = end;
  }
}

// Lease is a granted lease, held while its stream lives.
class Lease {
  constructor(stream, granted) {
    this.id = granted.lease_id;
    this.ttlMs = fromDuration(granted.ttl); // the TTL in force, maybe the broker's default
    this.expiresAt = timestamp(granted.expires_at);
    this.maxExpiresAt = timestamp(granted.max_expires_at);
    this._stream = stream;
    // ended resolves, once, with { reason, message }: reason is the enum
    // name from the broker's last message, revoked{reason, message}, or null
    // (with `error`) when the stream failed without one. It never rejects.
    this.end = null;
    this.ended = new Promise((resolve) => { this._resolveEnded = resolve; });
    // Renew at a third of the TTL, as etcd's clients do: two renewals may
    // be lost before the lease expires.
    const every = Math.max(Math.floor(this.ttlMs / 3), 100);
    this._renewTimer = setInterval(() => this._write({ renew: {} }), every);
    this._renewTimer.unref();
  }

  // release gives the lease back and resolves with how it ended: reason
  // 'RECLAIM_REASON_RELEASED', or the reason of whatever ended it first.
  release() {
    if (!this.end) this._write({ release: {} });
    return this.ended;
  }

  // guard races work (a promise) against the end of the lease: it settles
  // like the work, or rejects with LeaseEndedError when the lease ends first.
  // The broker cancels the lease's commands on reclaim, so the abandoned
  // work fails soon after (ABORTED); that failure is swallowed.
  guard(work) {
    work.catch(() => {});
    return Promise.race([
      work,
      this.ended.then((end) => { throw new LeaseEndedError(end); }),
    ]);
  }

  _write(msg) {
    if (!this.end && this._stream.writable) this._stream.write(msg);
  }

  _finish(end) {
    if (this.end) return;
    this.end = end;
    clearInterval(this._renewTimer);
    if (this._stream.writable) this._stream.end(); // close our side too
    this._resolveEnded(end);
  }
}

function timestamp(ts) {
  return ts ? new Date(Number(ts.seconds) * 1000 + Math.round(ts.nanos / 1e6)) : null;
}

// acquire opens a Lease stream and resolves with the Lease once granted.
// It rejects with the gRPC error of a failed acquire (RESOURCE_EXHAUSTED
// when no capacity came within the wait, INVALID_ARGUMENT, UNAVAILABLE...).
//
// opts: ttlMs (idle TTL), waitMs (longest wait in the queue), maxLifetimeMs,
// labels ({k: v}), context (ContextOptions), onQueued(position).
function acquire(leaseClient, opts = {}) {
  const { ttlMs, waitMs, maxLifetimeMs, labels = {}, context = null, onQueued = () => {} } = opts;
  return new Promise((resolve, reject) => {
    const stream = leaseClient.Lease();
    let lease = null;
    let failure = null;
    stream.on('data', (resp) => {
      switch (resp.msg) {
        case 'queued':
          onQueued(resp.queued.position);
          break;
        case 'granted':
          lease = new Lease(stream, resp.granted);
          resolve(lease);
          break;
        case 'renewed':
          if (lease) lease.expiresAt = timestamp(resp.renewed.expires_at);
          break;
        case 'revoked':
          if (lease) lease._finish({ reason: resp.revoked.reason, message: resp.revoked.message });
          break;
        default: // a message this client does not know: ignore it
      }
    });
    stream.on('error', (err) => {
      failure = err;
      if (lease) lease._finish({ reason: null, message: err.details || err.message, error: err });
      else reject(err);
    });
    stream.on('end', () => {
      // After revoked this is a no-op; otherwise the stream ended early.
      const err = failure || new Error('lease stream ended without a final revoked message');
      if (lease) lease._finish({ reason: null, message: err.message, error: err });
      else reject(err);
    });
    stream.write({
      acquire: {
        ttl: toDuration(ttlMs),
        wait_timeout: toDuration(waitMs),
        max_lifetime: toDuration(maxLifetimeMs),
        labels,
        context,
      },
    });
  });
}

module.exports = {
  PROTO_DIR,
  loadApi,
  connect,
  call,
  acquire,
  Lease,
  LeaseEndedError,
  toDuration,
  fromDuration,
  parseDuration,
  reasonName,
  status: grpc.status,
};
