// @platformatic/kafka agent for kbroker's compatibility matrix (--wide): the JSON-lines operations
// of compat/clients/__init__.py that this agent implements, with the library's public API; the
// others answer "unsupported" (N/A in the matrix).
// Usage: node platformatic.mjs HOST:PORT   (PLATFORMATIC_DIR: the installed package's directory)

import { createInterface } from 'node:readline'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

const DIR = process.env.PLATFORMATIC_DIR
const { Admin, Consumer, Producer } = await import(join(DIR, 'dist', 'index.js'))
const VERSION = JSON.parse(readFileSync(join(DIR, 'package.json'))).version
const bootstrap = process.argv[2]
// COMPAT_SECURITY (compat/security.py): TLS verified against the CA file, and SASL
const security = JSON.parse(process.env.COMPAT_SECURITY || '{"protocol": "PLAINTEXT"}')
const secure = security.protocol === 'SASL_SSL'
  ? { tls: { ca: [readFileSync(security.ca, 'utf-8')] },
      sasl: { mechanism: security.mechanism, username: security.username, password: security.password } }
  : {}
const base = { clientId: `compat-platformatic-${VERSION}`, bootstrapBrokers: bootstrap.split(','), ...secure }

class Unsupported extends Error {}

const buf = s => (s === null || s === undefined ? undefined : Buffer.from(s, 'base64'))
const b64 = b => (b === null || b === undefined || b.length === 0 ? null : Buffer.from(b).toString('base64'))

async function withAdmin (fn) {
  const admin = new Admin(base)
  try { return await fn(admin) } finally { await admin.close() }
}

function fromMessage (m) {
  const h = []
  for (const [k, v] of m.headers || []) h.push([Buffer.from(k).toString(), b64(v)])
  return { k: b64(m.key), v: b64(m.value), h, timestamp: Number(m.timestamp), partition: m.partition, offset: Number(m.offset) }
}

// A group member consuming in the background; `assigned` follows the consumer's assignments.
class Member {
  constructor (group, topics, options) {
    const protocol = options.protocol === 'consumer'
      ? { groupProtocol: 'consumer', ...(options.remote_assignor ? { groupRemoteAssignor: options.remote_assignor } : {}) }
      : { sessionTimeout: options.session_timeout_ms || 10000, heartbeatInterval: 1000 }
    this.consumer = new Consumer({ ...base, groupId: group, ...protocol })
    this.records = []
    this.error = null
    this.started = this.consumer.consume({ topics, mode: 'committed', fallbackMode: 'earliest', autocommit: options.auto_commit ? 200 : false, maxWaitTime: 500 })
      .then(stream => {
        this.stream = stream
        stream.on('data', m => this.records.push(fromMessage(m)))
        stream.on('error', e => { this.error = `${e.name}: ${e.message}` })
      }, e => { this.error = `${e.name}: ${e.message}` })
  }

  take () {
    const records = this.records
    this.records = []
    const assigned = (this.consumer.assignments || []).flatMap(a => a.partitions.map(p => [a.topic, p])).sort()
    return { assigned, records, error: this.error }
  }
}

const state = {}

const ops = {
  hello: async () => ({
    client: 'platformatic-kafka', version: VERSION, detail: `node ${process.version}`,
    features: ['admin', 'timestamps', 'consumer_protocol']
  }),

  metadata: () => withAdmin(async admin => {
    // it has no "every topic" request: list, then describe. A topic another cell deletes in
    // between fails the describe; listing again is what an application would do.
    let metadata
    for (let attempt = 1; !metadata; attempt++) {
      try {
        metadata = await admin.metadata({ topics: await admin.listTopics() })
      } catch (e) {
        if (attempt === 3) throw e
      }
    }
    return {
      brokers: [...metadata.brokers.values()].map(b => [b.host, b.port]),
      topics: Object.fromEntries([...metadata.topics.entries()].map(([name, t]) => [name, t.partitionsCount]))
    }
  }),

  create_topics: ({ topics }) => withAdmin(async admin => {
    for (const t of topics) {
      await admin.createTopics({
        topics: [t.name], partitions: t.partitions, replicas: t.replicas || 1,
        configs: Object.entries(t.config || {}).map(([name, value]) => ({ name, value }))
      })
    }
    return null
  }),

  delete_topics: ({ topics }) => withAdmin(admin => admin.deleteTopics({ topics }).then(() => null)),

  create_partitions: ({ topic, count }) =>
    withAdmin(admin => admin.createPartitions({ topics: [{ name: topic, count }] }).then(() => null)),

  produce: async ({ topic, records, options = {} }) => {
    if (options.compression || options.idempotent) throw new Unsupported('this agent produces plain batches only')
    const producer = new Producer({ ...base, acks: -1 })
    try {
      const result = await producer.send({
        messages: records.map(r => ({
          topic, key: buf(r.k), value: buf(r.v) ?? Buffer.alloc(0), partition: r.partition,
          headers: new Map((r.h || []).map(([k, v]) => [Buffer.from(k), buf(v) ?? Buffer.alloc(0)])),
          ...(r.timestamp !== undefined ? { timestamp: BigInt(r.timestamp) } : {})
        }))
      })
      const next = {}
      for (const o of result.offsets || []) next[o.partition] = Number(o.offset)
      return records.map(r => (r.partition === undefined || next[r.partition] === undefined) ? null : next[r.partition]++)
    } finally { await producer.close() }
  },

  member_start: async ({ group, topics, options = {} }) => {
    if (topics.some(t => t.startsWith('^'))) throw new Unsupported('@platformatic/kafka subscribes to topic names only')
    state.member = new Member(group, topics, options)
    await state.member.started
    return null
  },
  member_state: async () => state.member.take(),
  member_commit: async ({ offsets }) => {
    await state.member.consumer.commit({ offsets: offsets.map(([topic, partition, offset]) => ({ topic, partition, offset: BigInt(offset), leaderEpoch: -1 })) })
    return null
  },
  member_close: async () => {
    await state.member.consumer.close(true)
    state.member = null
    return null
  }
}

const describe = e => `${e.name}: ${e.message}` + (Array.isArray(e.errors) ? ` [${e.errors.map(describe).join('; ')}]` : '')

// One request at a time, in order, like the other agents.
let queue = Promise.resolve()
createInterface({ input: process.stdin }).on('line', line => {
  const request = JSON.parse(line)
  queue = queue.then(async () => {
    let response
    try {
      const op = ops[request.op]
      if (!op) throw new Unsupported(`the platformatic agent has no ${request.op} yet`)
      const ok = await op(request.args || {})
      response = { ok: ok === undefined ? null : ok }
    } catch (e) {
      response = e instanceof Unsupported
        ? { error: e.message, kind: 'unsupported' }
        : { error: describe(e).slice(0, 400), kind: 'error' }
    }
    response.id = request.id
    process.stdout.write(JSON.stringify(response) + '\n')
  })
}).on('close', () => process.exit(0))
