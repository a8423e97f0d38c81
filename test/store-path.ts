import type { Config } from '../src/config/config.js';

/** The token store's file, for tests whose configuration keeps the grant in one. */
export function storeFile(config: Config): string {
  if (config.accounts[0]!.tokenStore.kind !== 'file') throw new Error('this test needs a file token store');
  return config.accounts[0]!.tokenStore.path;
}
