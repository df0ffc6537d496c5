/** Where an alert about a destination goes: one D1 read, when the alert is stored. */
import { and, eq, sql } from "drizzle-orm";
import { alias } from "drizzle-orm/sqlite-core";
import { destinations, sources } from "../db/schema";
import { ALERTS_PROVIDER } from "../ingest/providers";
import type { Services } from "../services";
import type { AlertContext } from "./alerts";

/** The destination's source and URL, and its account's alerts source; null when the destination is gone. */
export async function alertContext(s: Services, destinationId: string): Promise<AlertContext | null> {
  const alertsSource = alias(sources, "alerts_source");
  const row = await s.db
    .select({
      sourceId: destinations.sourceId,
      url: destinations.url,
      provider: sql<string>`${sources.provider}`,
      alertsSourceId: alertsSource.id,
    })
    .from(destinations)
    .innerJoin(sources, eq(sources.id, destinations.sourceId))
    .leftJoin(alertsSource, and(eq(alertsSource.accountId, sources.accountId), sql`${alertsSource.provider} = ${ALERTS_PROVIDER}`))
    .where(eq(destinations.id, destinationId))
    .get();
  if (!row) return null;
  return { sourceId: row.sourceId, url: row.url, onAlertsSource: row.provider === ALERTS_PROVIDER, alertsSourceId: row.alertsSourceId };
}
