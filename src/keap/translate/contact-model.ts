// Keap's custom contact fields, as GET /v2/contacts/model describes them: the XML-RPC name of
// one is "_" + its field_name (keap-xmlrpc-to-rest-v2.md §5, §10). The model changes only when
// someone edits the account's fields, so one answer is kept for a while per account and shared
// by concurrent calls; it is read only by calls that name a custom field.
import type { CustomField, CustomFields, RestCaller } from './rest.js';
import { V2, expectOk } from './args.js';

export const CONTACT_MODEL_CACHE = {
  /** How long one answer of /v2/contacts/model is used. */
  ttlMs: 5 * 60_000,
} as const;

export class ContactModel {
  private fields: CustomFields | undefined;
  private fetchedAt = 0;
  private pending: Promise<CustomFields> | undefined;

  constructor(
    private readonly ttlMs: number = CONTACT_MODEL_CACHE.ttlMs,
    private readonly now: () => number = Date.now,
  ) {}

  customFields(rest: RestCaller): Promise<CustomFields> {
    if (this.fields !== undefined && this.now() - this.fetchedAt < this.ttlMs) return Promise.resolve(this.fields);
    this.pending ??= this.fetch(rest).finally(() => {
      this.pending = undefined;
    });
    return this.pending;
  }

  private async fetch(rest: RestCaller): Promise<CustomFields> {
    const answer = await rest.call('GET', `${V2}/contacts/model`);
    const model = expectOk(answer.status, answer.body);
    const fields = new Map<string, CustomField>();
    for (const f of Array.isArray(model.custom_fields) ? (model.custom_fields as Record<string, unknown>[]) : []) {
      const id = typeof f.id === 'string' || typeof f.id === 'number' ? String(f.id) : undefined;
      if (typeof f.field_name !== 'string' || id === undefined) continue;
      fields.set(f.field_name.toLowerCase(), {
        id,
        name: f.field_name,
        type: typeof f.field_type === 'string' ? f.field_type : 'TEXT',
      });
    }
    this.fields = fields;
    this.fetchedAt = this.now();
    return fields;
  }
}
