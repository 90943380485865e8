-- Webhook subscriptions created through the API (issue 13): their Standard
-- Webhooks signing secrets live here (base64, newest first, at most two
-- during a rotation). Those of the webhooks file keep their secrets in
-- their secret files and have origin 'file'.
ALTER TABLE webhook_subscriptions ADD COLUMN origin TEXT NOT NULL DEFAULT 'file';
ALTER TABLE webhook_subscriptions ADD COLUMN secrets TEXT NOT NULL DEFAULT '';
