// The Keap simulator in a child process of its own, so the CPU the benchmark bills to "the
// server" is the proxy's alone (in one process the simulator's work would dilute the ratios).
//
// Options: SimulatorOptions as JSON in the environment variable SIM_OPTIONS_ENV (e.g. a spike
// limit for the pacing scenario); none means the defaults, which refuse nothing.
//
// Protocol: the child says { type: 'ready', url, tokenUrl }; the parent may ask
// { type: 'token', id } for a live access token and gets { type: 'token', id, token };
// { type: 'counters', id } gets { type: 'counters', id, counters } (what the simulator saw,
// e.g. the 429s it sent); { type: 'close' } ends it.
import { KeapSimulator, type SimulatorCounters, type SimulatorOptions } from '../test/simulator/keap-simulator.js';
import { SIM_OPTIONS_ENV } from './processes.js';

export type SimRequest = { type: 'token'; id: number } | { type: 'counters'; id: number } | { type: 'close' };
export type SimAnswer =
  { type: 'token'; id: number; token: string } | { type: 'counters'; id: number; counters: SimulatorCounters };
export type SimMessage = { type: 'ready'; url: string; tokenUrl: string } | SimAnswer;

const options = JSON.parse(process.env[SIM_OPTIONS_ENV] ?? '{}') as SimulatorOptions;
const sim = await KeapSimulator.start(options);
const reply = (msg: SimMessage): void => {
  process.send?.(msg);
};
process.on('message', (msg: SimRequest) => {
  if (msg.type === 'token') reply({ type: 'token', id: msg.id, token: sim.issueAccessToken() });
  // A copy: the simulator keeps counting into its own object.
  else if (msg.type === 'counters') reply({ type: 'counters', id: msg.id, counters: { ...sim.counters } });
  else void sim.close().then(() => process.exit(0));
});
reply({ type: 'ready', url: sim.url, tokenUrl: sim.tokenUrl });
