// Everything that belongs to one Keap account, reached through one object: a stage at the
// start of the pipeline (pipeline/stages.ts, resolveAccount) puts it on the exchange, and
// every later stage and response handler takes the account's parts from there.
import type { CredentialSource } from '../tokens/credentials.js';
import type { Pacer } from '../pacing/pacer.js';
import { ContactModel } from '../keap/translate/contact-model.js';
import { XmlRpcEndpoint } from './xmlrpc-endpoint.js';

export class Account {
  constructor(
    /** The registry's name for the account ("default" while there is one). */
    readonly id: string,
    /** Bearer tokens from a broker, or a static key. */
    readonly credentials: CredentialSource,
    /** This account's share of Keap's quotas. */
    readonly pacer: Pacer,
    /** The account's custom contact fields, for translated XML-RPC calls that name one. */
    readonly contactModel: ContactModel = new ContactModel(),
    /** What was seen of Keap's XML-RPC endpoint for this account (XMLRPC_MODE=fallback). */
    readonly xmlrpcEndpoint: XmlRpcEndpoint = new XmlRpcEndpoint(),
  ) {}

  /** Names the account in logs and metrics: the Keap tenant behind its credential once known. */
  label(): string {
    return this.credentials.tenant();
  }

  /**
   * Cached answers are kept apart per Keap tenant: a grant replaced by one for another Keap
   * account must not be served the first one's answers.
   */
  cacheNamespace(): string {
    return this.credentials.tenant();
  }

  start(): Promise<void> {
    return this.credentials.start();
  }

  async stop(): Promise<void> {
    this.credentials.stop();
    await this.pacer.stop();
  }
}
