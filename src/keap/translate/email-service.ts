// APIEmailService answered from REST v2's email address status (keap-xmlrpc-to-rest-v2.md §3.3, §7.3).
import { V2, arg, expectOk, text } from './args.js';
import type { Translation } from './rest.js';

const statusPath = (email: string): string => `${V2}/emailAddresses/${encodeURIComponent(email)}/status`;

export const API_EMAIL_SERVICE: [string, Translation][] = [
  [
    'APIEmailService.optIn',
    async (params, { rest }) => {
      const email = text(arg(params, 1, 'string'));
      // Keap's XML-RPC took a blank reason as "API Opt In"; v2 requires one.
      const reason = text(params[2] ?? { type: 'string', value: '' }) || 'API Opt In';
      const before = await rest.call('GET', statusPath(email));
      if (before.status === 404) return { type: 'boolean', value: false };
      const was = expectOk(before.status, before.body).status;
      const after = await rest.call('PATCH', statusPath(email), { opted_in: true, reason });
      // "Only works the first time an email address opts in": true when the status changed.
      return { type: 'boolean', value: expectOk(after.status, after.body).status !== was };
    },
  ],
  [
    'APIEmailService.optOut',
    async (params, { rest }) => {
      const email = text(arg(params, 1, 'string'));
      const reason = text(params[2] ?? { type: 'string', value: '' }) || 'API Opt Out';
      const answer = await rest.call('PATCH', statusPath(email), { opted_in: false, reason });
      if (answer.status === 404) return { type: 'boolean', value: false };
      expectOk(answer.status, answer.body);
      return { type: 'boolean', value: true };
    },
  ],
  [
    'APIEmailService.getOptStatus',
    async (params, { rest }) => {
      const email = text(arg(params, 1, 'string'));
      const answer = await rest.call('GET', statusPath(email));
      // Keap's XML-RPC: 0 opted out or unknown, 1 single opt-in, 2 double opt-in (confirmed).
      if (answer.status === 404) return { type: 'int', value: 0 };
      const body = expectOk(answer.status, answer.body);
      if (body.opted_in !== true) return { type: 'int', value: 0 };
      return { type: 'int', value: body.status === 'DOUBLE_OPT_IN' || body.status === 'CONFIRMED' ? 2 : 1 };
    },
  ],
];
