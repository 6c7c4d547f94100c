// The seed's bursts in k6 (the seed team's own tool), to cross-check what
// slotgate-load reports with an independent client:
//
//   k6 run -e USERS=800 loadtest/k6/burst.js                 # burst-800
//   k6 run -e USERS=2000 -e CLICKS=3 loadtest/k6/burst.js    # duplicate-2000
//
// Each virtual user makes CLICKS simultaneous CreateReservation calls (party
// of 4) into one fresh 40-seat slot that setup() opens. Refusals are
// answers: the thresholds fail the run only on a wrong outcome (other than
// exactly 10 winners, or an unexpected status), never on SOLD_OUT or
// DUPLICATE. HOST (127.0.0.1:50051) and TOKEN (a bearer token when
// authentication is on) come from -e. With -e CALL=health every call is the
// health Check instead: what k6 and gRPC alone cost in the same shape.
import grpc from 'k6/net/grpc';
import { Counter } from 'k6/metrics';
import { fail } from 'k6';

const HOST = __ENV.HOST || '127.0.0.1:50051';
const USERS = parseInt(__ENV.USERS || '800', 10);
const CLICKS = parseInt(__ENV.CLICKS || '1', 10);
const CAPACITY = 40;
const PARTY = 4;
const HEALTH = __ENV.CALL === 'health';

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
    : { booked: [`count==${CAPACITY / PARTY}`], unexpected: ['count==0'] },
  summaryTrendStats: ['min', 'avg', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

function params() {
  return __ENV.TOKEN ? { metadata: { authorization: `Bearer ${__ENV.TOKEN}` } } : {};
}

export function setup() {
  // A restaurant no earlier run used, so the slot starts empty.
  const slot = { restaurant_id: String(800000000 + (Date.now() % 100000000)), date: '2026-12-24', time: '19:00' };
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
