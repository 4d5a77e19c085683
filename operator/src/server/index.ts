/**
 * The operator's HTTP server: artifacts for agents, webhook receivers, health and readiness,
 * and room for extra routes such as `/metrics`. Knows nothing of Kubernetes.
 */
export {
  PUBLISHED_PER_SOURCE,
  SourceServer,
  signWebhookPayload,
  webhookPath,
  type RouteHandler,
  type SourceServerOptions,
  type WebhookHandler,
  type WebhookRegistration,
  type WebhookTrigger,
} from "./server.ts";
