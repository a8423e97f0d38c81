// The simulator's CRM state: contacts, tags and their assignments, email opt statuses and the
// contact model's custom fields, shared by the REST v2 routes (rest-v2.ts) and the classic
// XML-RPC methods (xmlrpc-classic.ts). Contacts are kept in REST v2's shape (ids as strings,
// ISO-8601 UTC times); XML-RPC reads and writes them through the field mapping of
// /work/shared/keap-xmlrpc-to-rest-v2.md §10. Node built-ins only.

export interface EmailAddress {
  email: string;
  field: 'EMAIL1' | 'EMAIL2' | 'EMAIL3';
  opt_in_reason?: string;
}
export interface PhoneNumber {
  number: string;
  field: string; // PHONE1..PHONE5
  extension?: string;
  type?: string;
}
export interface FaxNumber {
  number: string;
  field: string; // FAX1, FAX2
  type?: string;
}
export interface Address {
  field: 'BILLING' | 'SHIPPING' | 'OTHER';
  line1?: string;
  line2?: string;
  locality?: string;
  region?: string;
  region_code?: string;
  country_code?: string;
  postal_code?: string;
  zip_code?: string;
  zip_four?: string;
}
export interface CustomFieldValue {
  id: string;
  content: unknown;
}

/** A stored contact: REST v2 Contact properties, tag_ids and email statuses derived on read. */
export interface StoredContact {
  id: string;
  create_time: string;
  update_time: string;
  given_name?: string;
  family_name?: string;
  middle_name?: string;
  preferred_name?: string;
  prefix?: string;
  suffix?: string;
  spouse_name?: string;
  job_title?: string;
  website?: string;
  time_zone?: string;
  preferred_locale?: string;
  contact_type?: string;
  referral_code?: string;
  assistant_name?: string;
  assistant_phone?: string;
  billing_information?: string;
  owner_id?: string;
  leadsource_id?: string;
  birth_date?: string;
  anniversary_date?: string;
  source_type?: string;
  company?: { id?: string; company_name?: string };
  email_addresses: EmailAddress[];
  phone_numbers: PhoneNumber[];
  fax_numbers: FaxNumber[];
  addresses: Address[];
  custom_fields: CustomFieldValue[];
}

/** Scalar (string) properties a CreateUpdateContactRequest may set. */
export const SCALAR_PROPS = [
  'given_name',
  'family_name',
  'middle_name',
  'preferred_name',
  'prefix',
  'suffix',
  'spouse_name',
  'job_title',
  'website',
  'time_zone',
  'preferred_locale',
  'contact_type',
  'referral_code',
  'assistant_name',
  'assistant_phone',
  'billing_information',
  'owner_id',
  'leadsource_id',
  'birth_date',
  'anniversary_date',
  'source_type',
] as const;
export type ScalarProp = (typeof SCALAR_PROPS)[number];
/** Array properties: replaced whole by a PATCH, as v2 documents. */
export const ARRAY_PROPS = ['email_addresses', 'phone_numbers', 'fax_numbers', 'addresses', 'custom_fields'] as const;

export interface Tag {
  id: string;
  name: string;
  description: string;
  category: { id: string };
  create_time: string;
  update_time: string;
}

/** CustomFieldMetaData as GET /rest/v2/contacts/model answers it. */
export interface CustomFieldMeta {
  id: string;
  label: string;
  field_name: string;
  field_type: string; // TEXT, WHOLE_NUMBER, DATE, ...
  record_type?: string;
  default_value?: string;
  group_id?: string;
  group_name?: string;
  options?: { id: string; label: string }[];
}

export const DEFAULT_CUSTOM_FIELDS: CustomFieldMeta[] = [
  { id: '6', label: 'Favourite Colour', field_name: 'FavouriteColour', field_type: 'TEXT' },
  { id: '8', label: 'Shoe Size', field_name: 'ShoeSize', field_type: 'WHOLE_NUMBER' },
];

export const DEFAULT_TAGS: { name: string; description: string; categoryId: string }[] = [
  { name: 'Customer', description: 'Paying customer', categoryId: '10' },
  { name: 'Lead', description: 'Not yet a customer', categoryId: '10' },
];

/** REST v2 RestEmailAddressStatus.status values. */
export type EmailStatus =
  | 'UNENGAGED_MARKETABLE'
  | 'SINGLE_OPT_IN'
  | 'DOUBLE_OPT_IN'
  | 'CONFIRMED'
  | 'UNENGAGED_NON_MARKETABLE'
  | 'NON_MARKETABLE'
  | 'LOCKDOWN'
  | 'BOUNCE'
  | 'HARD_BOUNCE'
  | 'MANUAL'
  | 'ADMIN'
  | 'SYSTEM'
  | 'LIST_UNSUBSCRIBE'
  | 'FEEDBACK'
  | 'SPAM'
  | 'INVALID'
  | 'DEACTIVATED';

export interface EmailStatusRecord {
  email: string;
  status: EmailStatus;
  create_time: string;
  reason?: string;
}

/** Marketable statuses (opted_in true). */
const MARKETABLE: ReadonlySet<EmailStatus> = new Set([
  'UNENGAGED_MARKETABLE',
  'SINGLE_OPT_IN',
  'DOUBLE_OPT_IN',
  'CONFIRMED',
]);
/** The spec: an opt-in only moves these statuses to Unconfirmed (SINGLE_OPT_IN); others stay non-marketable. */
const OPT_IN_FROM: ReadonlySet<EmailStatus> = new Set([
  'UNENGAGED_MARKETABLE',
  'UNENGAGED_NON_MARKETABLE',
  'NON_MARKETABLE',
  'MANUAL',
]);

export const isMarketable = (s: EmailStatus): boolean => MARKETABLE.has(s);

export class CrmStore {
  readonly contacts = new Map<string, StoredContact>();
  readonly tags = new Map<string, Tag>();
  /** contact id -> (tag id -> applied time, ISO). */
  readonly assignments = new Map<string, Map<string, string>>();
  /** lower-cased email -> status. */
  readonly emailStatuses = new Map<string, EmailStatusRecord>();
  customFields: CustomFieldMeta[] = DEFAULT_CUSTOM_FIELDS.map((f) => ({ ...f }));
  private nextContactId = 1;
  private nextTagId = 1;
  /** Clock, replaceable by tests; every timestamp is whole seconds (XML-RPC dates have no fraction). */
  now: () => Date = () => new Date(Math.floor(Date.now() / 1000) * 1000);

  constructor() {
    this.reset();
  }

  /** Empties everything, restarts ids at 1 and seeds the default tags (ids 1 and 2). */
  reset(): void {
    this.contacts.clear();
    this.tags.clear();
    this.assignments.clear();
    this.emailStatuses.clear();
    this.customFields = DEFAULT_CUSTOM_FIELDS.map((f) => ({ ...f }));
    this.nextContactId = 1;
    this.nextTagId = 1;
    for (const t of DEFAULT_TAGS) this.addTag(t.name, t.description, t.categoryId);
  }

  iso(): string {
    return this.now().toISOString().replace('.000Z', 'Z');
  }

  addTag(name: string, description = '', categoryId = ''): Tag {
    const t = this.iso();
    const tag: Tag = {
      id: String(this.nextTagId++),
      name,
      description,
      category: { id: categoryId },
      create_time: t,
      update_time: t,
    };
    this.tags.set(tag.id, tag);
    return tag;
  }

  /** Stores a new contact (already validated by the caller) and registers its email addresses. */
  createContact(fields: Omit<StoredContact, 'id' | 'create_time' | 'update_time'>): StoredContact {
    const t = this.iso();
    const c: StoredContact = { ...fields, id: String(this.nextContactId++), create_time: t, update_time: t };
    this.contacts.set(c.id, c);
    this.noteEmails(c);
    return c;
  }

  touch(c: StoredContact): void {
    c.update_time = this.iso();
    this.noteEmails(c);
  }

  deleteContact(id: string): boolean {
    this.assignments.delete(id);
    return this.contacts.delete(id);
  }

  /** Gives every address on the contact a status record: opted in when an opt_in_reason came with it. */
  private noteEmails(c: StoredContact): void {
    for (const e of c.email_addresses) {
      const key = e.email.toLowerCase();
      const rec = this.emailStatuses.get(key);
      if (rec === undefined) {
        // A new address without consent is non-marketable (inferred; Keap documents no default).
        this.emailStatuses.set(key, {
          email: e.email,
          status: e.opt_in_reason ? 'SINGLE_OPT_IN' : 'NON_MARKETABLE',
          create_time: this.iso(),
          ...(e.opt_in_reason ? { reason: e.opt_in_reason } : {}),
        });
      } else if (e.opt_in_reason) {
        this.optIn(e.email, e.opt_in_reason);
      }
    }
  }

  emailStatus(email: string): EmailStatusRecord | undefined {
    return this.emailStatuses.get(email.toLowerCase());
  }

  /** Per the v2 spec: only some statuses move to SINGLE_OPT_IN ("Unconfirmed"). True when it changed. */
  optIn(email: string, reason: string): boolean {
    const rec = this.emailStatus(email);
    if (rec === undefined || !OPT_IN_FROM.has(rec.status) || rec.status === 'SINGLE_OPT_IN') return false;
    rec.status = 'SINGLE_OPT_IN';
    rec.reason = reason;
    return true;
  }

  /** An opt-out is "Opt-Out: Manual". True when the address is known. */
  optOut(email: string, reason: string): boolean {
    const rec = this.emailStatus(email);
    if (rec === undefined) return false;
    rec.status = 'MANUAL';
    rec.reason = reason;
    return true;
  }

  tagsOf(contactId: string): Map<string, string> {
    return this.assignments.get(contactId) ?? new Map<string, string>();
  }

  /** 'SUCCESS' | 'DUPLICATE' | 'CONTACT_NOT_FOUND' (v1's vocabulary; v2 documents none). */
  applyTag(tagId: string, contactId: string): 'SUCCESS' | 'DUPLICATE' | 'CONTACT_NOT_FOUND' {
    const c = this.contacts.get(contactId);
    if (c === undefined) return 'CONTACT_NOT_FOUND';
    let m = this.assignments.get(contactId);
    if (m === undefined) this.assignments.set(contactId, (m = new Map()));
    if (m.has(tagId)) return 'DUPLICATE';
    m.set(tagId, this.iso());
    c.update_time = this.iso();
    return 'SUCCESS';
  }

  removeTag(tagId: string, contactId: string): boolean {
    const m = this.assignments.get(contactId);
    if (m === undefined || !m.delete(tagId)) return false;
    const c = this.contacts.get(contactId);
    if (c) c.update_time = this.iso();
    return true;
  }

  customFieldById(id: string): CustomFieldMeta | undefined {
    return this.customFields.find((f) => f.id === id);
  }

  customFieldByName(name: string): CustomFieldMeta | undefined {
    const n = name.toLowerCase();
    return this.customFields.find((f) => f.field_name.toLowerCase() === n);
  }

  /** Contacts in id order (ids are numeric strings). */
  allContacts(): StoredContact[] {
    return [...this.contacts.values()].sort((a, b) => Number(a.id) - Number(b.id));
  }
}

/** The REST v2 view of a contact (tag_ids and email opt statuses filled in). */
export function contactView(store: CrmStore, c: StoredContact): Record<string, unknown> {
  const out: Record<string, unknown> = { id: c.id };
  for (const p of SCALAR_PROPS) if (c[p] !== undefined && c[p] !== '') out[p] = c[p];
  if (c.company && (c.company.id || c.company.company_name)) out.company = { ...c.company };
  out.email_addresses = c.email_addresses.map((e) => {
    const s = store.emailStatus(e.email);
    return {
      email: e.email,
      field: e.field,
      ...(s ? { email_opt_status: s.status, is_opt_in: isMarketable(s.status) } : {}),
    };
  });
  out.phone_numbers = c.phone_numbers.map((p) => ({ ...p }));
  out.fax_numbers = c.fax_numbers.map((p) => ({ ...p }));
  out.addresses = c.addresses.map((a) => ({ ...a }));
  out.custom_fields = c.custom_fields.map((f) => ({ ...f }));
  out.tag_ids = [...store.tagsOf(c.id).keys()];
  out.create_time = c.create_time;
  out.update_time = c.update_time;
  return out;
}
