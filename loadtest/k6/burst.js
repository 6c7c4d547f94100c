// The seed's bursts in k6 (the seed team's own tool), to cross-check what
// slotgate-load reports with an independent client:
//
//   k6 run -e SCENARIO=burst-800 loadtest/k6/burst.js        # the default
//   k6 run -e SCENARIO=duplicate-2000 loadtest/k6/burst.js
//
// The scenarios, the slot's capacity and the party size are read at init
// from their one definition, loadtest/scenarios.json. Each virtual user
// makes its scenario's clicks as simultaneous CreateReservation calls into
// one fresh slot that setup() opens (a restaurant no earlier run used).
// Refusals are answers: the thresholds fail the run only on a wrong outcome
// (other than exactly the scenario's winners, or an unexpected status),
// never on SOLD_OUT or DUPLICATE. HOST (127.0.0.1:50051) and TOKEN (a bearer
// token when authentication is on) come from -e. With -e CALL=health every
// call is the health Check instead: what k6 and gRPC alone cost in the same
// shape.
import grpc from 'k6/net/grpc';
import { Counter } from 'k6/metrics';
import { fail } from 'k6';

// open() resolves a relative path from this script's directory.
const SEED = JSON.parse(open('../scenarios.json'));
const NAME = __ENV.SCENARIO || 'burst-800';
const SCENARIO = SEED.scenarios.find((scenario) => scenario.name === NAME);
if (!SCENARIO) {
  throw new Error(`SCENARIO=${NAME}: one of ${SEED.scenarios.map((scenario) => scenario.name).join(', ')}`);
}
const HOST = __ENV.HOST || '127.0.0.1:50051';
const USERS = count('users', SCENARIO.users);
const CLICKS = count('clicks', SCENARIO.clicks);
const WINNERS = count('winners', SCENARIO.winners);
const CAPACITY = count('capacity', SEED.capacity);
const PARTY = count('party_size', SEED.party_size);
const HEALTH = __ENV.CALL === 'health';

// A figure of the definition, which must be a whole number (a key renamed
// there must stop the run, not make a threshold of NaN).
function count(key, value) {
  if (!Number.isInteger(value) || value < 0) {
    throw new Error(`loadtest/scenarios.json: ${key} of ${NAME} is ${value}, not a whole number`);
  }
  return value;
}

const client = new grpc.Client();
client.load(['../../proto/slotgate/v1', '.'], 'reservations.proto', 'health.proto');

const booked = new Counter('booked');
const refused = new Counter('refused');
const unexpected = new Counter('unexpected');
const answered = new Counter('health_ok');

export const options = {
  scenarios: {
    burst: { executor: 'per-vu-iterations', vus: USERS, iterations: 1, maxDuration: '60s' },
  },
  thresholds: HEALTH
    ? { unexpected: ['count==0'] }
    : { booked: [`count==${WINNERS}`], unexpected: ['count==0'] },
  summaryTrendStats: ['min', 'avg', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

function params() {
  return __ENV.TOKEN ? { metadata: { authorization: `Bearer ${__ENV.TOKEN}` } } : {};
}

export function setup() {
  // A restaurant no earlier run used, so the slot starts empty.
  const slot = { restaurant_id: String(800000000 + (Date.now() % 100000000)), date: SEED.date, time: SEED.time };
  client.connect(HOST, { plaintext: true });
  const opened = client.invoke('slotgate.v1.SlotAdmin/OpenSlots', { slots: [{ slot, capacity: CAPACITY }] }, params());
  if (opened.status !== grpc.StatusOK) fail(`OpenSlots: ${opened.error && opened.error.message}`);
  client.close();
  return { slot, run: Date.now() };
}

export default async function (data) {
  client.connect(HOST, { plaintext: true });
  if (HEALTH) {
    const checks = [];
    for (let click = 0; click < CLICKS; click++) {
      checks.push(client.asyncInvoke('grpc.health.v1.Health/Check', {}, params()));
    }
    for (const response of await Promise.all(checks)) {
      (response.status === grpc.StatusOK ? answered : unexpected).add(1);
    }
    client.close();
    return;
  }
  const user = `k6-${data.run}-user-${__VU}`;
  const calls = [];
  for (let click = 0; click < CLICKS; click++) {
    calls.push(
      client.asyncInvoke(
        'slotgate.v1.Reservations/CreateReservation',
        {
          request_id: `k6-${data.run}-${__VU}-${click}`,
          user_id: user,
          slot: data.slot,
          party_size: PARTY,
          type: 'RESERVATION_DEPOSIT',
        },
        params(),
      ),
    );
  }
  for (const response of await Promise.all(calls)) {
    if (response.status === grpc.StatusOK) {
      booked.add(1);
    } else if (
      response.status === grpc.StatusFailedPrecondition ||
      response.status === grpc.StatusAlreadyExists
    ) {
      refused.add(1);
    } else {
      unexpected.add(1);
      console.warn(`unexpected: ${response.status} ${response.error && response.error.message}`);
    }
  }
  client.close();
}

export function teardown(data) {
  if (HEALTH) return;
  client.connect(HOST, { plaintext: true });
  const left = client.invoke('slotgate.v1.Reservations/GetRemaining', { slot: data.slot }, params());
  client.close();
  if (left.status !== grpc.StatusOK || Number(left.message.remaining) !== 0) {
    fail(`GetRemaining after the burst: ${JSON.stringify(left.message)} (expected 0 remaining)`);
  }
}
