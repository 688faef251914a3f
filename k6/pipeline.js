// Load scenarios for the order pipeline. `make load` runs this with
// SCENARIO, RATE and DURATION; see docs/PERFORMANCE.md.
//
//   orders  constant arrival rate of POST /orders over the seeded products
//   mixed   80% GET /products/:id, 15% POST /orders, 5% product writes (PATCH price)
//   hot     every order on one product: the contention case
//   concurrent  POST /orders at RATE and price changes (PATCH) of the same
//           products at PRICE_RATE, over the first PRODUCTS (20) seeded
//           products: writers of both outboxes at once, contending
//   ramp    arrival rate stepped up (STEP_RATE every STEP_SECONDS up to
//           MAX_RATE); each request is tagged with its step so the report
//           can find the highest step that held (the knee)
//   noop    GET / on the no-op server as fast as 64 VUs go (the HTTP ceiling)
//   chaos   like orders, without latency thresholds (faults are injected)
//
// SEED_FILE names the JSON `perf seed` wrote (products and initial stock);
// without it (docker compose's k6) setup() creates 20 products itself.
// SUMMARY_FILE receives k6's full summary for `perf report`.
//
// Bearer tokens (scripts/auth.sh mints them with the machine's issuer):
// each order is sent with one of ORDER_TOKENS_FILE's (a JSON list, one
// token per subject) at random, or with ORDER_TOKEN; product writes with
// one of CATALOG_TOKENS_FILE's at random, or CATALOG_TOKEN (or the one in
// CATALOG_TOKEN_FILE: docker compose's k6). None set: no Authorization header (AUTH_DISABLED=true).

import http from 'k6/http';
import { check } from 'k6';
import { Counter } from 'k6/metrics';

const SCENARIO = __ENV.SCENARIO || 'orders';
const RATE = parseInt(__ENV.RATE || '1000', 10);
const DURATION = __ENV.DURATION || '60s';
// Several instances: comma-separated URLs, each request picks one.
const ORDER_URLS = (__ENV.ORDER_URL || 'http://127.0.0.1:8080').split(',');
const PRODUCT_URLS = (__ENV.PRODUCT_URL || 'http://127.0.0.1:3000').split(',');
const NOOP_URL = __ENV.NOOP_URL || 'http://127.0.0.1:9099';
const PRICE_RATE = parseInt(__ENV.PRICE_RATE || '100', 10);
const PRODUCTS = parseInt(__ENV.PRODUCTS || '20', 10);
const STEP_RATE = parseInt(__ENV.STEP_RATE || '1000', 10);
const STEP_SECONDS = parseInt(__ENV.STEP_SECONDS || '20', 10);
const MAX_RATE = parseInt(__ENV.MAX_RATE || '8000', 10);
const seedFile = __ENV.SEED_FILE ? JSON.parse(open(__ENV.SEED_FILE)) : null;
const orderTokens = __ENV.ORDER_TOKENS_FILE ? JSON.parse(open(__ENV.ORDER_TOKENS_FILE))
  : __ENV.ORDER_TOKEN ? [__ENV.ORDER_TOKEN] : [];
const catalogTokens = __ENV.CATALOG_TOKENS_FILE ? JSON.parse(open(__ENV.CATALOG_TOKENS_FILE))
  : __ENV.CATALOG_TOKEN_FILE ? [open(__ENV.CATALOG_TOKEN_FILE).trim()]
  : __ENV.CATALOG_TOKEN ? [__ENV.CATALOG_TOKEN] : [];
const json = { headers: { 'Content-Type': 'application/json' } };
const withToken = (token) => token
  ? { headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` } }
  : json;
const anyOf = (tokens) => tokens.length ? tokens[Math.floor(Math.random() * tokens.length)] : '';
const orderJson = () => withToken(anyOf(orderTokens));
const catalogJson = () => withToken(anyOf(catalogTokens));
// With LOG_ACCEPTED=1 every accepted order's id is logged (k6
// --log-output=file=…), so `perf verify-accepted` can check each exists,
// and every refused one as `refused <status>` (0: no answer), so a fault
// run can count its failures by status.
const LOG_ACCEPTED = __ENV.LOG_ACCEPTED === '1';
const accepted = new Counter('orders_accepted');

// Enough pre-allocated VUs that k6 never stalls allocating them mid-run.
const vus = (rate) => Math.max(100, Math.ceil(rate / 10));

function constant(exec, rate) {
  return {
    executor: 'constant-arrival-rate', exec, rate, timeUnit: '1s', duration: DURATION,
    preAllocatedVUs: vus(rate), maxVUs: vus(rate) * 4,
  };
}

function rampStages() {
  const stages = [];
  for (let rate = STEP_RATE; rate <= MAX_RATE; rate += STEP_RATE) {
    stages.push({ target: rate, duration: '1s' });
    stages.push({ target: rate, duration: `${STEP_SECONDS - 1}s` });
  }
  return stages;
}

const scenarios = {
  orders: { orders: constant('placeOrder', RATE) },
  mixed: { mixed: constant('mixed', RATE) },
  hot: { hot: constant('hotOrder', RATE) },
  chaos: { chaos: constant('placeOrder', RATE) },
  concurrent: { orders: constant('placeFewOrder', RATE), prices: constant('changePrice', PRICE_RATE) },
  // Closed loop, no pause: as many requests as k6 and the server manage.
  noop: { noop: { executor: 'constant-vus', exec: 'noop', vus: 64, duration: DURATION } },
  ramp: {
    ramp: {
      executor: 'ramping-arrival-rate', exec: 'rampOrder', startRate: STEP_RATE, timeUnit: '1s',
      preAllocatedVUs: vus(MAX_RATE), maxVUs: vus(MAX_RATE) * 2, stages: rampStages(),
    },
  },
};

// Per-step submetrics exist only for metrics with thresholds, so each step
// gets thresholds that always pass; the report judges the steps itself.
function rampThresholds() {
  const thresholds = {};
  for (let rate = STEP_RATE; rate <= MAX_RATE; rate += STEP_RATE) {
    thresholds[`http_req_duration{stage:${rate}}`] = ['p(99)>=0'];
    thresholds[`http_req_failed{stage:${rate}}`] = ['rate>=0'];
    thresholds[`http_reqs{stage:${rate}}`] = ['count>=0'];
  }
  return thresholds;
}

export const options = {
  scenarios: scenarios[SCENARIO],
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
  thresholds: SCENARIO === 'ramp' ? rampThresholds()
    : SCENARIO === 'chaos' || SCENARIO === 'concurrent' ? {}
    : { http_req_failed: ['rate<0.001'], http_req_duration: ['p(99)<20'] },
  // A killed service must not hold requests for k6's default 60 s.
  discardResponseBodies: true,
};

const pick = (list) => list[Math.floor(Math.random() * list.length)];
const orderUrl = () => pick(ORDER_URLS);
const productUrl = () => pick(PRODUCT_URLS);

const orderParams = (tags) => Object.assign({ tags, timeout: '5s' }, orderJson());

function order(productId, tags) {
  const body = JSON.stringify({ product_id: productId, quantity: 1 + Math.floor(Math.random() * 3) });
  const response = http.post(`${orderUrl()}/orders`, body, orderParams(tags));
  if (check(response, { 'order accepted': (r) => r.status === 201 })) {
    accepted.add(1);
    if (LOG_ACCEPTED) {
      console.log(response.headers.Location);
    }
  } else if (LOG_ACCEPTED) {
    console.log(`refused ${response.status}`);
  }
}

export function placeOrder(data) {
  order(pick(data.seed.products), { name: 'POST /orders' });
}

export function hotOrder(data) {
  order(data.seed.hot, { name: 'POST /orders' });
}

// The products the concurrent scenario orders and reprices.
const few = (seed) => seed.products.slice(0, PRODUCTS);

export function placeFewOrder(data) {
  order(pick(few(data.seed)), { name: 'POST /orders' });
}

// Price changes only: stock stays under the stock loop's control, so the
// invariant check still adds up.
export function changePrice(data) {
  const products = SCENARIO === 'concurrent' ? few(data.seed) : data.seed.products;
  const body = JSON.stringify({ price: 100 + Math.floor(Math.random() * 900) });
  const response = http.patch(`${productUrl()}/products/${pick(products)}`, body, Object.assign({ tags: { name: 'PATCH /products/:id' } }, catalogJson()));
  check(response, { 'product written': (r) => r.status === 200 });
}

export function mixed(data) {
  const seed = data.seed;
  const roll = Math.random();
  if (roll < 0.80) {
    const response = http.get(`${productUrl()}/products/${pick(seed.products)}`, { tags: { name: 'GET /products/:id' } });
    check(response, { 'product read': (r) => r.status === 200 });
  } else if (roll < 0.95) {
    order(pick(seed.products), { name: 'POST /orders' });
  } else {
    changePrice(data);
  }
}

// Products to order from when no SEED_FILE was given.
function createProducts(count) {
  const products = [];
  for (let n = 0; n < count; n++) {
    const body = JSON.stringify({ name: `k6 product ${n}`, price: 100 + n, stock: 1000000000 });
    const response = http.post(`${productUrl()}/products`, body, Object.assign({ responseType: 'text' }, catalogJson()));
    if (response.status !== 201) {
      throw new Error(`creating a product answered ${response.status}`);
    }
    products.push(JSON.parse(response.body).id);
  }
  return { products, hot: products[0] };
}

export function setup() {
  const seed = seedFile || (SCENARIO === 'noop' ? { products: [1], hot: 1 } : createProducts(20));
  return { started: Date.now(), seed };
}

export function rampOrder(data) {
  const step = Math.min(MAX_RATE, STEP_RATE * (1 + Math.floor((Date.now() - data.started) / 1000 / STEP_SECONDS)));
  order(pick(data.seed.products), { name: 'POST /orders', stage: String(step) });
}

export function noop() {
  http.get(`${NOOP_URL}/`, { tags: { name: 'noop' } });
}

export function handleSummary(data) {
  const out = {};
  if (__ENV.SUMMARY_FILE) {
    out[__ENV.SUMMARY_FILE] = JSON.stringify(data, null, 1);
  }
  const m = data.metrics;
  const duration = m.http_req_duration ? m.http_req_duration.values : {};
  const reqs = m.http_reqs ? m.http_reqs.values : { count: 0, rate: 0 };
  const failed = m.http_req_failed ? m.http_req_failed.values.rate : 0;
  const dropped = m.dropped_iterations ? m.dropped_iterations.values.count : 0;
  out.stdout = `k6: ${reqs.count} requests, ${reqs.rate.toFixed(1)}/s, failed ${(100 * failed).toFixed(3)}%, `
    + `dropped ${dropped}, p50 ${(duration.med || 0).toFixed(2)} ms, p95 ${(duration['p(95)'] || 0).toFixed(2)} ms, `
    + `p99 ${(duration['p(99)'] || 0).toFixed(2)} ms\n`;
  return out;
}
