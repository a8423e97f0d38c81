// The accounts this proxy serves, and which one a request is for.
import type { IncomingMessage } from 'node:http';
import type { Account } from './account.js';

export class AccountRegistry {
  private readonly accounts: readonly Account[];

  constructor(accounts: readonly Account[]) {
    if (accounts.length !== 1) throw new Error(`one account is supported for now, not ${accounts.length}`);
    this.accounts = accounts;
  }

  /** The account a request is for, or undefined when it names none this proxy serves. With one account, every request is its. */
  resolve(_req: IncomingMessage): Account | undefined {
    return this.accounts[0];
  }

  /** The account the local endpoints (/readyz, /oauth/*) speak for while there is one. */
  get primary(): Account {
    return this.accounts[0] as Account;
  }

  all(): readonly Account[] {
    return this.accounts;
  }
}
