// The Keap simulator in a child process of its own, so the CPU the benchmark bills to "the
// server" is the proxy's alone (in one process the simulator's work would dilute the ratios).
//
// Protocol: the child says { type: 'ready', url, tokenUrl }; the parent may ask
// { type: 'token', id } for a live access token and gets { type: 'token', id, token };
// { type: 'close' } ends it.
import { KeapSimulator } from '../test/simulator/keap-simulator.js';

export type SimRequest = { type: 'token'; id: number } | { type: 'close' };
export type SimMessage = { type: 'ready'; url: string; tokenUrl: string } | { type: 'token'; id: number; token: string };

const sim = await KeapSimulator.start();
const reply = (msg: SimMessage): void => {
  process.send?.(msg);
};
process.on('message', (msg: SimRequest) => {
  if (msg.type === 'token') reply({ type: 'token', id: msg.id, token: sim.issueAccessToken() });
  else void sim.close().then(() => process.exit(0));
});
reply({ type: 'ready', url: sim.url, tokenUrl: sim.tokenUrl });
