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

/** TagCategory as GET /rest/v2/tags/categories answers it (XML-RPC's ContactGroupCategory). */
export interface TagCategory {
  id: string;
  name: string;
  description: string;
  create_time: string;
  update_time: string;
}

/** (choice) One category, id 10 as the default tags name it; later categories count on from 11. */
export const DEFAULT_TAG_CATEGORIES: { id: string; name: string; description: string }[] = [
  { id: '10', name: 'Customer Lifecycle', description: 'Where a contact is in the sales funnel' },
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

export type DuplicateOption = 'Email' | 'EmailAndName' | 'EmailAndNameAndCompany';
export const DUPLICATE_OPTIONS: readonly DuplicateOption[] = ['Email', 'EmailAndName', 'EmailAndNameAndCompany'];

/** (choice) The words of a refused merge; REST v2's 400 message, and XML-RPC's InvalidParameter fault after "[InvalidParameter]". */
export const MERGE_IDS_REQUIRED = 'contact_id and duplicate_contact_id are required';
export const MERGE_SAME_IDS = 'contact_id and duplicate_contact_id must be different contacts';

export type MergeResult =
  { merged: StoredContact } | { error: 'invalid'; message: string } | { error: 'not_found'; id: string };

export const isMarketable = (s: EmailStatus): boolean => MARKETABLE.has(s);

export class CrmStore {
  readonly contacts = new Map<string, StoredContact>();
  readonly tags = new Map<string, Tag>();
  readonly tagCategories = new Map<string, TagCategory>();
  /** contact id -> (tag id -> applied time, ISO). */
  readonly assignments = new Map<string, Map<string, string>>();
  /** lower-cased email -> status. */
  readonly emailStatuses = new Map<string, EmailStatusRecord>();
  customFields: CustomFieldMeta[] = DEFAULT_CUSTOM_FIELDS.map((f) => ({ ...f }));
  private nextContactId = 1;
  private nextTagId = 1;
  private nextCategoryId = 1;
  /** Clock, replaceable by tests; every timestamp is whole seconds (XML-RPC dates have no fraction). */
  now: () => Date = () => new Date(Math.floor(Date.now() / 1000) * 1000);

  constructor() {
    this.reset();
  }

  /** Empties everything, restarts ids at 1 and seeds the default tag category (id 10) and tags (ids 1 and 2). */
  reset(): void {
    this.contacts.clear();
    this.tags.clear();
    this.tagCategories.clear();
    this.assignments.clear();
    this.emailStatuses.clear();
    this.customFields = DEFAULT_CUSTOM_FIELDS.map((f) => ({ ...f }));
    this.nextContactId = 1;
    this.nextTagId = 1;
    this.nextCategoryId = 1;
    for (const c of DEFAULT_TAG_CATEGORIES) this.addTagCategory(c.name, c.description, c.id);
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

  /** A new tag category; `id` only for seeding (later ids count on from the highest). */
  addTagCategory(name: string, description = '', id?: string): TagCategory {
    const t = this.iso();
    const cid = id ?? String(this.nextCategoryId);
    this.nextCategoryId = Math.max(this.nextCategoryId, Number(cid) + 1);
    const category: TagCategory = { id: cid, name, description, create_time: t, update_time: t };
    this.tagCategories.set(category.id, category);
    return category;
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

  /**
   * The first contact (in id order) that `draft` duplicates under Keap's duplicate options, used
   * by REST v2's `duplicate_option` and XML-RPC's addWithDupCheck alike: the same EMAIL1 (choice:
   * only the primary address, as XML-RPC's Email field is EMAIL1), then the same first and last
   * name, then the same company name; all without regard to case, an empty value matching an
   * empty one (choice). No EMAIL1, no duplicate.
   */
  findDuplicate(
    draft: Pick<StoredContact, 'email_addresses' | 'given_name' | 'family_name' | 'company'>,
    option: DuplicateOption,
  ): StoredContact | undefined {
    const email = draft.email_addresses.find((e) => e.field === 'EMAIL1')?.email;
    if (email === undefined || email === '') return undefined;
    const eq = (a: string | undefined, b: string | undefined) => (a ?? '').toLowerCase() === (b ?? '').toLowerCase();
    return this.allContacts().find((x) => {
      if (!eq(x.email_addresses.find((e) => e.field === 'EMAIL1')?.email, email)) return false;
      if (option === 'Email') return true;
      if (!eq(x.given_name, draft.given_name) || !eq(x.family_name, draft.family_name)) return false;
      return option === 'EmailAndName' || eq(x.company?.company_name, draft.company?.company_name);
    });
  }

  /**
   * Merges contact `duplicateId` into `keepId`, for REST v2's contacts:merge and XML-RPC's
   * ContactService.merge alike. (choice; Keap documents only "the duplicate contact will be
   * merged into the primary contact") The kept contact keeps every value it has; each of its
   * empty values is filled from the duplicate: scalar properties, the company, and each array
   * item by its slot (EMAIL2, PHONE3, SHIPPING, a custom field's id). The tags are the union;
   * a tag both had keeps the kept contact's applied time. The duplicate is then deleted.
   */
  mergeContacts(keepId: string, duplicateId: string): MergeResult {
    if (keepId === '' || duplicateId === '') return { error: 'invalid', message: MERGE_IDS_REQUIRED };
    if (keepId === duplicateId) return { error: 'invalid', message: MERGE_SAME_IDS };
    const keep = this.contacts.get(keepId);
    if (keep === undefined) return { error: 'not_found', id: keepId };
    const dup = this.contacts.get(duplicateId);
    if (dup === undefined) return { error: 'not_found', id: duplicateId };
    for (const p of SCALAR_PROPS) if ((keep[p] ?? '') === '' && (dup[p] ?? '') !== '') keep[p] = dup[p];
    if (dup.company !== undefined) {
      const company = { ...keep.company };
      if ((company.id ?? '') === '' && (dup.company.id ?? '') !== '') company.id = dup.company.id;
      if ((company.company_name ?? '') === '' && (dup.company.company_name ?? '') !== '')
        company.company_name = dup.company.company_name;
      if (company.id !== undefined || company.company_name !== undefined) keep.company = company;
    }
    const fill = <T>(mine: T[], theirs: T[], slot: (x: T) => string): void => {
      const taken = new Set(mine.map(slot));
      for (const x of theirs) if (!taken.has(slot(x))) mine.push(structuredClone(x));
    };
    fill(keep.email_addresses, dup.email_addresses, (x) => x.field);
    fill(keep.phone_numbers, dup.phone_numbers, (x) => x.field);
    fill(keep.fax_numbers, dup.fax_numbers, (x) => x.field);
    fill(keep.addresses, dup.addresses, (x) => x.field);
    fill(keep.custom_fields, dup.custom_fields, (x) => x.id);
    const dupTags = this.tagsOf(duplicateId);
    if (dupTags.size > 0) {
      let mine = this.assignments.get(keepId);
      if (mine === undefined) this.assignments.set(keepId, (mine = new Map()));
      for (const [tagId, applied] of dupTags) if (!mine.has(tagId)) mine.set(tagId, applied);
    }
    this.deleteContact(duplicateId);
    this.touch(keep);
    return { merged: keep };
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
