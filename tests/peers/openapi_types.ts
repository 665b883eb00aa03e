// Compiled by tests/openapi_tools.rs (`tsc --strict --noEmit`) beside the types that
// openapi-typescript generates from the live /openapi.json (`./api.d.ts`): a client that
// sends an SMS and reads its status type-checks, and a wrong one does not.
import type { components, paths } from "./api";

type SendSmsRequest =
  paths["/api/messages/sms"]["post"]["requestBody"]["content"]["application/json"];
type Accepted =
  paths["/api/messages/sms"]["post"]["responses"][202]["content"]["application/json"];
type MessageStatus =
  paths["/api/messages/{idempotency_key}"]["get"]["responses"][200]["content"]["application/json"];
type Problem = components["schemas"]["Problem"];

export const sms: SendSmsRequest = {
  from: "+12016661234",
  to: "+18045551234",
  type: "sms",
  body: "Hello!",
  timestamp: "2024-11-01T14:00:00Z",
};

export const mms: SendSmsRequest = {
  from: "+12016661234",
  to: "+18045551234",
  type: "mms",
  body: "A picture",
  attachments: ["https://example.com/a.png"],
};

// @ts-expect-error: an MMS needs its attachments (the oneOf's `mms` branch requires them)
export const mmsWithoutAttachments: SendSmsRequest = {
  from: "+12016661234",
  to: "+18045551234",
  type: "mms",
  body: "A picture",
};

// @ts-expect-error: `type` is an enum, not any string
export const fax: SendSmsRequest = { from: "+12016661234", to: "+18045551234", type: "fax", body: "x" };

export function statusUrl(accepted: Accepted): string {
  return accepted.status_url;
}

/** Exhaustive over the status enum: a new status without a case fails to compile. */
export function describe(status: MessageStatus): string {
  switch (status.status) {
    case "pending":
    case "stored":
    case "failed":
      return `in progress after ${status.attempts} attempt(s)`;
    case "sent":
    case "delivered":
      return `${status.status} as ${status.provider_message_id ?? "an unknown id"}`;
    case "undelivered":
      return `not delivered: ${status.last_error ?? ""}`;
    case "received":
      return `received in conversation ${status.conversation_id ?? "?"}`;
    case "dead_lettered":
      return `dead-lettered: ${status.last_error ?? ""}`;
    default: {
      const unknown: never = status.status;
      return unknown;
    }
  }
}

export function explain(problem: Problem): string {
  const fields = (problem.errors ?? []).map((e) => `${e.field}: ${e.message}`);
  return [problem.title, ...fields].join("\n");
}
