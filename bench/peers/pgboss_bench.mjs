#!/usr/bin/env node
// Peer benchmark: end-to-end throughput of pg-boss on PostgreSQL.
//
//   node pgboss_bench.mjs --dsn DSN --jobs N [--batch B] [--workers W]
//                         [--producers P] [--submit-batch S] [--mode fetch|work] [--keep-schema]
//
// Measures the time from the first submission to the last durable completion of N jobs:
// P producers insert the jobs in batches of S (boss.insert, one INSERT per batch) while W
// workers take batches of B and complete each batch with one call. Every statement is its
// own transaction with the server's default synchronous_commit (on), so a job counts as
// submitted/completed only once its commit is flushed to the WAL.
//
// Two consumption styles are available:
//   --mode fetch (default): each worker loops boss.fetch(queue, {batchSize: B}) +
//     boss.complete(queue, ids). No artificial delays; an empty fetch waits 2 ms.
//   --mode work: boss.work(queue, {batchSize: B, pollingIntervalSeconds: 0.5}) with W
//     registrations. pg-boss completes the batch after the handler returns (it does not
//     await that completion), and the worker loop sleeps until the polling interval
//     (minimum 0.5 s) has passed since the fetch started, even when the batch was full, so a
//     worker handles at most ~2 batches/s unless a batch takes longer than 0.4 s.
// Measured here (see README.md), fetch+complete beat work at every setting tried (e.g.
// 13.8k vs 4.0k jobs/s at --batch 1000 --workers 2; 31k vs 19k at --batch 5000), so fetch is
// the default. Default sizes: --batch 1000 matches the largest completion batch drover's
// e2e_bench sends; at that batch, --workers 2 --producers 1 was the best of a small sweep on
// a 2-core box. pg-boss's fetch sorts every queued job of the queue on each call (ORDER BY
// priority, created_on ... LIMIT B FOR UPDATE SKIP LOCKED), so its cost grows with the
// backlog: fewer, larger fetches and a producer that does not race far ahead win.
//
// Each run uses a fresh pg-boss schema (pgboss_bench_<pid>_<time>), dropped at the end unless
// --keep-schema is given. pg-boss's cron scheduler and maintenance (supervise) are switched
// off so that only queue traffic is measured; they would not run within a short run anyway.
//
// stdout gets exactly two lines:
//   pg-boss: N jobs in S s = R jobs/s
//   {"peer":"pg-boss","version":"x.y.z","jobs":N,"seconds":S,"jobs_per_s":R}
// Settings and progress go to stderr.

import { createRequire } from 'node:module'
import { setTimeout as sleep } from 'node:timers/promises'
import PgBoss from 'pg-boss'

const require = createRequire(import.meta.url)
const PGBOSS_VERSION = require('pg-boss/package.json').version

function usage (msg) {
  if (msg) console.error(`pgboss_bench: ${msg}`)
  console.error('usage: node pgboss_bench.mjs --dsn DSN --jobs N [--batch B] [--workers W]\n' +
    '         [--producers P] [--submit-batch S] [--mode fetch|work] [--keep-schema]')
  process.exit(2)
}

function parseArgs (argv) {
  const opts = {
    dsn: null,
    jobs: null,
    batch: 1000,
    workers: 2,
    producers: 1,
    submitBatch: null,
    mode: 'fetch',
    keepSchema: false
  }
  const intArg = (name, v) => {
    const n = Number(v)
    if (!Number.isInteger(n) || n < 1) usage(`${name} needs a positive integer, got '${v}'`)
    return n
  }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const next = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`)
      return argv[++i]
    }
    switch (a) {
      case '--dsn': opts.dsn = next(); break
      case '--jobs': opts.jobs = intArg(a, next()); break
      case '--batch': opts.batch = intArg(a, next()); break
      case '--workers': opts.workers = intArg(a, next()); break
      case '--producers': opts.producers = intArg(a, next()); break
      case '--submit-batch': opts.submitBatch = intArg(a, next()); break
      case '--mode': opts.mode = next(); break
      case '--keep-schema': opts.keepSchema = true; break
      case '-h': case '--help': usage()
      // falls through (usage exits)
      default: usage(`unknown argument '${a}'`)
    }
  }
  if (!opts.dsn) usage('--dsn is required')
  if (!opts.jobs) usage('--jobs is required')
  if (opts.mode !== 'fetch' && opts.mode !== 'work') usage(`--mode must be fetch or work, got '${opts.mode}'`)
  opts.submitBatch = opts.submitBatch || opts.batch
  return opts
}

async function main () {
  const opts = parseArgs(process.argv.slice(2))
  const { dsn, jobs: N, batch: B, workers: W, producers: P, submitBatch: S, mode } = opts

  const schema = `pgboss_bench_${process.pid}_${Date.now().toString(36)}`
  const queue = 'bench'

  const boss = new PgBoss({
    connectionString: dsn,
    schema,
    max: W + P + 2, // pool: one connection per worker and producer, plus spare
    application_name: 'pgboss_bench',
    schedule: false,
    supervise: false
  })
  let bossError = null
  boss.on('error', err => {
    bossError = bossError || err
    console.error('pgboss_bench: pg-boss error:', err.message || err)
  })
  await boss.start()
  const db = boss.getDb()
  await boss.createQueue(queue)

  const settings = {}
  for (const name of ['server_version', 'synchronous_commit', 'fsync', 'wal_level']) {
    const { rows } = await db.executeSql(`SHOW ${name}`)
    settings[name] = rows[0][name]
  }
  console.error(`pgboss_bench: pg-boss ${PGBOSS_VERSION}, node ${process.version}, mode=${mode}, ` +
    `jobs=${N}, batch=${B}, submit_batch=${S}, workers=${W}, producers=${P}, schema=${schema}`)
  console.error(`pgboss_bench: server ${settings.server_version}, synchronous_commit=` +
    `${settings.synchronous_commit}, fsync=${settings.fsync}, wal_level=${settings.wal_level}`)

  const nBatches = Math.ceil(N / S)
  let nextBatch = 0
  let submitted = 0
  let completed = 0
  let done = false
  let finish // resolves when the last completion has committed
  const finished = new Promise(resolve => { finish = resolve })
  const markCompleted = n => {
    completed += n
    if (completed >= N && !done) {
      done = true
      finish(performance.now())
    }
  }

  async function producer () {
    for (;;) {
      const b = nextBatch++
      if (b >= nBatches) return
      const first = b * S
      const count = Math.min(S, N - first)
      const batch = new Array(count)
      for (let k = 0; k < count; k++) batch[k] = { name: queue, data: { i: first + k } }
      await boss.insert(batch)
      submitted += count
    }
  }

  async function fetchWorker () {
    while (!done) {
      const got = await boss.fetch(queue, { batchSize: B })
      if (got.length === 0) {
        await sleep(2)
        continue
      }
      const res = await boss.complete(queue, got.map(j => j.id))
      markCompleted(res.affected)
    }
  }

  // work mode: the handler only counts; pg-boss then issues complete() for the batch without
  // awaiting it, so the end time is taken when the database shows all N jobs completed.
  let handled = 0
  let allHandled
  const handledAll = new Promise(resolve => { allHandled = resolve })
  const workIds = []
  const countCompleted = async () => {
    const { rows } = await db.executeSql(
      `SELECT count(*)::int AS n FROM ${schema}.job WHERE name = $1 AND state = 'completed'`, [queue])
    return rows[0].n
  }

  let workers = []
  if (mode === 'work') {
    for (let k = 0; k < W; k++) {
      workIds.push(await boss.work(queue, { batchSize: B, pollingIntervalSeconds: 0.5 }, async got => {
        handled += got.length
        if (handled >= N) allHandled()
      }))
    }
  }

  const progress = setInterval(() => {
    console.error(`pgboss_bench: submitted ${submitted}, completed ${mode === 'work' ? handled : completed}`)
  }, 5000)
  progress.unref()

  const t0 = performance.now()
  const producers = Array.from({ length: P }, producer)
  if (mode === 'fetch') {
    workers = Array.from({ length: W }, fetchWorker)
  } else {
    handledAll.then(async () => {
      for (;;) {
        const n = await countCompleted()
        if (n >= N) { markCompleted(n); return }
        await sleep(5)
      }
    })
  }
  await Promise.all(producers)
  const tSubmitted = performance.now()
  const tDone = await finished
  await Promise.all(workers)
  clearInterval(progress)

  const seconds = (tDone - t0) / 1000
  const rate = N / seconds
  console.error(`pgboss_bench: all submitted after ${((tSubmitted - t0) / 1000).toFixed(3)} s ` +
    `(${Math.round(N / ((tSubmitted - t0) / 1000))} jobs/s submit rate)`)

  if (mode === 'work') {
    for (const id of workIds) await boss.offWork({ id })
  }
  const check = await countCompleted()
  if (!opts.keepSchema) await db.executeSql(`DROP SCHEMA ${schema} CASCADE`)
  await boss.stop({ graceful: false, wait: true })

  if (check !== N) {
    console.error(`pgboss_bench: expected ${N} completed jobs in the database, found ${check}`)
    process.exit(1)
  }
  if (bossError) process.exit(1)

  console.log(`pg-boss: ${N} jobs in ${seconds.toFixed(3)} s = ${rate.toFixed(0)} jobs/s`)
  console.log(JSON.stringify({
    peer: 'pg-boss',
    version: PGBOSS_VERSION,
    jobs: N,
    seconds: Number(seconds.toFixed(3)),
    jobs_per_s: Number(rate.toFixed(1))
  }))
}

main().catch(err => {
  console.error('pgboss_bench: failed:', err && err.stack ? err.stack : err)
  process.exit(1)
})
