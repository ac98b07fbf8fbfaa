'use strict'
// kafkajs agent for kbroker's compatibility matrix: the same JSON-lines operations as the Python
// drivers (see compat/clients/__init__.py), done with kafkajs's public API.
// Usage: node agent.js HOST:PORT   (KAFKAJS_DIR may point at another kafkajs release, for --wide)

const fs = require('fs')
const readline = require('readline')
const path = require('path')
const KAFKAJS = process.env.KAFKAJS_DIR || path.join(__dirname, 'node_modules', 'kafkajs')
const { Kafka, CompressionTypes, logLevel, PartitionAssigners } = require(KAFKAJS)
const VERSION = require(path.join(KAFKAJS, 'package.json')).version

const bootstrap = process.argv[2]
const clientId = `compat-kafkajs-${VERSION}`

// COMPAT_SECURITY (compat/security.py): TLS verified against the CA file, and SASL
const security = JSON.parse(process.env.COMPAT_SECURITY || '{"protocol": "PLAINTEXT"}')
const secure = security.protocol === 'SASL_SSL'
  ? { ssl: { ca: [fs.readFileSync(security.ca, 'utf-8')] },
      sasl: { mechanism: security.mechanism.toLowerCase(), username: security.username, password: security.password } }
  : {}

function kafka (options = {}) {
  const retry = options.timeout_ms ? { retries: 2, initialRetryTime: 200, maxRetryTime: 1000 } : { retries: 5 }
  return new Kafka({ clientId, brokers: bootstrap.split(','), logLevel: logLevel.NOTHING, requestTimeout: 15000, retry, ...secure })
}

class Unsupported extends Error {}

const buf = s => (s === null || s === undefined ? null : Buffer.from(s, 'base64'))
const b64 = b => (b === null || b === undefined ? null : Buffer.from(b).toString('base64'))

function toMessage (r) {
  const headers = {}
  for (const [k, v] of r.h || []) {
    if (headers[k] === undefined) headers[k] = buf(v)
    else headers[k] = [].concat(headers[k], [buf(v)])
  }
  const m = { key: buf(r.k), value: buf(r.v), headers }
  if (r.partition !== undefined) m.partition = r.partition
  if (r.timestamp !== undefined) m.timestamp = String(r.timestamp)
  return m
}

function fromMessage (partition, m) {
  const h = []
  for (const [k, v] of Object.entries(m.headers || {})) {
    for (const one of Array.isArray(v) ? v : [v]) h.push([k, b64(one)])
  }
  return { k: b64(m.key), v: b64(m.value), h, timestamp: Number(m.timestamp), partition, offset: Number(m.offset) }
}

const CODECS = { gzip: CompressionTypes.GZIP }

function roundRobinNamedLikeJava ({ cluster }) {
  // kafkajs calls its assigner "RoundRobinAssigner"; the Java-family clients call theirs "roundrobin".
  const assigner = PartitionAssigners.roundRobin({ cluster })
  assigner.name = 'roundrobin'
  return assigner
}

async function withAdmin (fn) {
  const admin = kafka().admin()
  await admin.connect()
  try { return await fn(admin) } finally { await admin.disconnect() }
}

async function withProducer (config, options, fn) {
  const producer = kafka(options).producer({ allowAutoTopicCreation: true, ...config })
  await producer.connect()
  try { return await fn(producer) } finally { await producer.disconnect() }
}

function offsetsOf (records, metadata) {
  // kafkajs reports one base offset per partition; records without a chosen partition can't be placed
  const next = {}
  for (const md of metadata) next[md.partition] = Number(md.baseOffset)
  return records.map(r => (r.partition === undefined || next[r.partition] === undefined) ? null : next[r.partition]++)
}

async function resolveOffset (topic, partition, offset) {
  if (typeof offset === 'number') return offset
  const offsets = await withAdmin(admin => admin.fetchTopicOffsets(topic))
  const p = offsets.find(o => o.partition === partition)
  return Number(offset === 'earliest' ? p.low : p.high)
}

// A consumer kept running in the background: kafkajs consumes only through groups, so an
// "assigned" consumer is a group of one that seeks its partition.
class Running {
  constructor () { this.records = []; this.assigned = []; this.ready = false; this.error = null }

  async start (consumer, topics, onJoin, autoCommit = false) {
    this.consumer = consumer
    consumer.on(consumer.events.GROUP_JOIN, e => {
      this.assigned = Object.entries(e.payload.memberAssignment).flatMap(([t, ps]) => ps.map(p => [t, p])).sort()
      if (onJoin) onJoin()
    })
    consumer.on(consumer.events.FETCH, () => { if (this.joined) this.ready = true })
    consumer.on(consumer.events.CRASH, e => { // a crash kafkajs restarts from (retriable) is not the member's end,
      this.assigned = [] //                        but it owns nothing until it has joined again
      if (!e.payload.restart) this.error = `${e.payload.error.name}: ${e.payload.error.message}`
    })
    await consumer.connect()
    for (const topic of topics) await consumer.subscribe({ topic, fromBeginning: this.fromBeginning })
    await consumer.run({
      autoCommit,
      eachMessage: async ({ partition, message }) => {
        if (this.only !== undefined && partition !== this.only) return
        this.records.push({ ...fromMessage(partition, message), arrived: Date.now() / 1000 })
      }
    })
  }

  take () {
    const records = this.records
    this.records = []
    return { assigned: this.assigned, records, error: this.error, ready: this.ready }
  }
}

function consumerConfig (groupId, options) {
  const config = {
    groupId,
    sessionTimeout: options.session_timeout_ms || 10000,
    heartbeatInterval: 1000,
    maxWaitTimeInMs: options.fetch_max_wait_ms || 500,
    maxBytesPerPartition: 8 * 1024 * 1024,
    readUncommitted: options.isolation !== 'read_committed'
  }
  if (options.assignor === 'roundrobin') config.partitionAssigners = [roundRobinNamedLikeJava]
  return config
}

let unique = 0
async function startAssigned (topic, partition, offset, options) {
  const start = await resolveOffset(topic, partition, offset)
  const running = new Running()
  running.only = partition
  running.fromBeginning = (options.reset || 'earliest') === 'earliest'
  const consumer = kafka().consumer(consumerConfig(`compat-assign-${process.pid}-${unique++}`, options))
  await running.start(consumer, [topic], () => {
    running.joined = true
    consumer.seek({ topic, partition, offset: String(start) })
  })
  return running
}

const state = {}

const ops = {
  hello: async () => ({
    client: 'kafkajs', version: VERSION, detail: `node ${process.version}`,
    features: ['admin', 'admin_groups', 'delete_groups', 'timestamps', 'commit_offsets', 'idempotence', 'transactions', 'compression:gzip']
      .concat(Number(VERSION.split('.')[0]) >= 2 ? ['repeated_headers'] : []) // 1.x: one value per header key
  }),

  metadata: () => withAdmin(async admin => {
    const cluster = await admin.describeCluster()
    const { topics } = await admin.fetchTopicMetadata()
    return {
      brokers: cluster.brokers.map(b => [b.host, b.port]),
      topics: Object.fromEntries(topics.map(t => [t.name, t.partitions.length]))
    }
  }),

  create_topics: ({ topics }) => withAdmin(async admin => {
    const created = await admin.createTopics({
      waitForLeaders: true,
      topics: topics.map(t => ({
        topic: t.name,
        numPartitions: t.partitions,
        replicationFactor: t.replicas || 1,
        configEntries: Object.entries(t.config || {}).map(([name, value]) => ({ name, value }))
      }))
    })
    if (!created) throw new Error('TOPIC_ALREADY_EXISTS: createTopics resolved false, kafkajs\'s documented answer for an existing topic')
    return null
  }),

  delete_topics: ({ topics }) => withAdmin(admin => admin.deleteTopics({ topics }).then(() => null)),

  describe_configs: ({ topic, keys }) => withAdmin(async admin => {
    const result = await admin.describeConfigs({ resources: [{ type: 2, name: topic, configNames: keys }], includeSynonyms: false })
    const out = {}
    for (const entry of result.resources[0].configEntries) out[entry.configName] = entry.configValue
    return out
  }),

  alter_configs: ({ topic, config }) => withAdmin(admin => admin.alterConfigs({
    resources: [{ type: 2, name: topic, configEntries: Object.entries(config).map(([name, value]) => ({ name, value })) }]
  }).then(() => null)),

  create_partitions: ({ topic, count }) =>
    withAdmin(admin => admin.createPartitions({ topicPartitions: [{ topic, count }] }).then(() => null)),

  list_groups: () => withAdmin(async admin => (await admin.listGroups()).groups.map(g => g.groupId)),

  describe_group: ({ group }) => withAdmin(async admin => {
    const [described] = (await admin.describeGroups([group])).groups
    return { state: described.state, members: described.members.length }
  }),

  group_offsets: ({ group, topic }) => withAdmin(async admin => {
    // 2.x takes topics and answers per topic; 1.x takes one topic and answers its partitions
    const answer = Number(VERSION.split('.')[0]) >= 2
      ? (await admin.fetchOffsets({ groupId: group, topics: [topic] }))[0].partitions
      : await admin.fetchOffsets({ groupId: group, topic })
    return answer.map(p => [topic, p.partition, Number(p.offset)]).filter(o => o[2] >= 0).sort()
  }),

  delete_groups: ({ groups }) => withAdmin(admin => admin.deleteGroups(groups).then(() => null)),

  produce: ({ topic, records, options = {} }) => {
    const compression = options.compression ? CODECS[options.compression] : CompressionTypes.None
    if (compression === undefined) throw new Unsupported(`kafkajs has no built-in ${options.compression} codec`)
    const config = options.idempotent ? { idempotent: true, maxInFlightRequests: 1 } : {}
    const send = messages => ({ topic, acks: -1, compression, timeout: options.timeout_ms || 30000, messages })
    return withProducer(config, options, async producer => {
      if (!options.pace_ms) return offsetsOf(records, await producer.send(send(records.map(toMessage))))
      const offsets = [] // paced: one record per send, pace_ms apart, with one producer
      for (const r of records) {
        offsets.push(...offsetsOf([r], await producer.send(send([toMessage(r)]))))
        await new Promise(resolve => setTimeout(resolve, options.pace_ms))
      }
      return offsets
    })
  },

  transaction: ({ topic, txid, steps, options = {} }) =>
    withProducer({ transactionalId: txid, idempotent: true, maxInFlightRequests: 1 }, options, async producer => {
      for (const step of steps) {
        const txn = await producer.transaction()
        await txn.send({ topic, acks: -1, messages: step.records.map(toMessage) })
        if (step.offsets) {
          const byTopic = {}
          for (const [t, partition, offset] of step.offsets.offsets) {
            (byTopic[t] = byTopic[t] || []).push({ partition, offset: String(offset) })
          }
          await txn.sendOffsets({
            consumerGroupId: step.offsets.group,
            topics: Object.entries(byTopic).map(([t, partitions]) => ({ topic: t, partitions }))
          })
        }
        await (step.end === 'commit' ? txn.commit() : txn.abort())
      }
      return null
    }),

  list_offsets: ({ topic, partition, spec }) => withAdmin(async admin => {
    if (spec === 'earliest' || spec === 'latest') {
      const p = (await admin.fetchTopicOffsets(topic)).find(o => o.partition === partition)
      return Number(spec === 'earliest' ? p.low : p.high)
    }
    const p = (await admin.fetchTopicOffsetsByTimestamp(topic, spec)).find(o => o.partition === partition)
    return Number(p.offset)
  }),

  consume: async ({ topic, partition, offset, count, timeout_ms = 20000, options = {} }) => {
    const running = await startAssigned(topic, partition, offset, options)
    const deadline = Date.now() + timeout_ms
    while (running.records.length < count && Date.now() < deadline && !running.error) await sleep(50)
    await running.consumer.disconnect()
    if (running.error) throw new Error(running.error)
    return running.records.slice(0, count)
  },

  watch_start: async ({ topic, partition, offset, options = {} }) => {
    state.watch = await startAssigned(topic, partition, offset, options)
    return null
  },
  watch_state: async () => state.watch.take(),

  member_start: async ({ group, topics, options = {} }) => {
    const running = new Running()
    running.joined = true
    running.fromBeginning = (options.reset || 'earliest') === 'earliest'
    const consumer = kafka().consumer(consumerConfig(group, options))
    state.member = running
    await running.start(consumer, topics, null, options.auto_commit || false)
    return null
  },
  member_state: async () => state.member.take(),
  member_commit: async ({ offsets }) => {
    await state.member.consumer.commitOffsets(offsets.map(([topic, partition, offset]) => ({ topic, partition, offset: String(offset) })))
    return null
  },
  member_close: async () => {
    await state.member.consumer.disconnect()
    state.member = null
    return null
  }
}

// kafkajs names the Kafka error in `type`, and an aggregate error keeps the real ones in `errors`
const describe = e => `${e.name}${e.type ? ' ' + e.type : ''}: ${e.message}` +
  (Array.isArray(e.errors) ? ` [${e.errors.map(describe).join('; ')}]` : '')

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

// One request at a time, in order, like the Python agents.
let queue = Promise.resolve()
readline.createInterface({ input: process.stdin }).on('line', line => {
  const request = JSON.parse(line)
  queue = queue.then(async () => {
    let response
    try {
      const op = ops[request.op]
      if (!op) throw new Unsupported(`kafkajs has no ${request.op}`)
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
}).on('close', () => process.exit(0)) // the cell is done or dead
