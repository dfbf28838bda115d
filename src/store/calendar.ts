/**
 * When budget periods start and end: LiteLLM's calendar resets (docs.litellm.ai "Budget Reset Times and
 * Timezones"), in the zone of `litellm_settings.timezone` (UTC by default) and at `budget_reset_time`
 * (midnight by default) — computed from the time alone, so every replica, and a restarted one, agrees on a
 * period without storing it:
 *
 * - `1mo` (and `30d`): calendar months from the 1st; `Nmo`: N months (from January, when N divides 12);
 * - `1w` (and `7d`): weeks from Monday; `Nw`: N weeks, counted from the first Monday of 1970;
 * - `1d` (and `24h`): days; `Nd`: N days, counted from 1 January 1970 — all of these starting at the reset
 *   time of day;
 * - `Nh` within the day (0:00, N h, 2N h… the last one ends at midnight), `Nm` within the hour, `Ns` within
 *   the minute, as LiteLLM aligns them (its sub-day resets ignore the reset time); as long as the unit above
 *   or longer (`48h`, `90m`), counted from 1970.
 *
 * Periods are found on the zone's wall clock and turned back into instants, so a day across a daylight-saving
 * change is 23 or 25 hours long, as the clock says.
 */

export interface BudgetPeriod {
  /** ms since the epoch, inclusive. */
  readonly start: number;
  /** ms since the epoch, exclusive; Number.MAX_SAFE_INTEGER for a budget without duration. */
  readonly end: number;
}

/** `30d`, `12h`, `2w`, `mo`, `1mo`: LiteLLM's budget_duration spellings. */
export const DURATION_PATTERN = /^(\d+)?(s|m|h|d|w|mo)$/;

const SECOND = 1_000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
/** 1970-01-05, the first Monday after the epoch: weeks are counted from it. */
const FIRST_MONDAY = 4 * DAY;
/** Periods remembered per calendar (one per distinct duration; more is a sign of many odd durations). */
const CACHED = 64;

const HH_MM_SS = /^([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$/;

/** `HH:MM` or `HH:MM:SS` (24-hour; `9:00` too, as LiteLLM reads it) as seconds after midnight, or undefined. */
export function parseTimeOfDay(v: string): number | undefined {
  const m = HH_MM_SS.exec(v);
  return m === null ? undefined : Number(m[1]) * 3600 + Number(m[2]) * 60 + Number(m[3] ?? 0);
}

/** Whether `zone` is an IANA time zone this runtime knows (`US/Eastern`, `Asia/Kolkata`, `UTC`). */
export function isTimeZone(zone: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

const UTC_NAMES = new Set(['UTC', 'ETC/UTC', 'GMT', 'ETC/GMT', 'ZULU', 'ETC/ZULU', 'UNIVERSAL', 'ETC/UNIVERSAL']);

export class BudgetCalendar {
  readonly timeZone: string;
  /** Seconds after local midnight at which day, week and month periods start. */
  readonly resetSeconds: number;
  readonly #utc: boolean;
  readonly #format: Intl.DateTimeFormat | undefined;
  readonly #cache = new Map<string, BudgetPeriod>();

  /** Throws for a zone the runtime does not know or a reset time outside the day (the config refuses both first). */
  constructor(timeZone = 'UTC', resetSeconds = 0) {
    if (!Number.isInteger(resetSeconds) || resetSeconds < 0 || resetSeconds >= 86_400)
      throw new RangeError(`budget reset time out of the day: ${resetSeconds} s`);
    this.timeZone = timeZone;
    this.resetSeconds = resetSeconds;
    // UTC needs no time-zone data; the first Intl formatter loads ICU's, about 8 MB of RSS.
    if (UTC_NAMES.has(timeZone.toUpperCase())) {
      this.#utc = true;
      this.#format = undefined;
      return;
    }
    const format = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
    this.#utc = format.resolvedOptions().timeZone === 'UTC';
    this.#format = this.#utc ? undefined : format;
  }

  /** The period of `duration` containing `now`; a budget without duration has one period, for ever. */
  period(duration: string | undefined, now: number): BudgetPeriod {
    if (duration === undefined) return { start: 0, end: Number.MAX_SAFE_INTEGER };
    const cached = this.#cache.get(duration);
    if (cached !== undefined && now >= cached.start && now < cached.end) return cached;
    const p = this.#around(duration, now);
    if (this.#cache.size >= CACHED) this.#cache.clear();
    this.#cache.set(duration, p);
    return p;
  }

  /**
   * The period found on the wall clock at `now`, stepped to the one that holds `now`: on a clock that shows
   * an hour twice (daylight saving ends), a time in the second pass reads as one before a boundary that was
   * already crossed in the first. Each step starts from a boundary, which the clock reads unambiguously.
   */
  #around(duration: string, now: number): BudgetPeriod {
    let p = this.#compute(duration, now);
    for (let step = 0; step < 64 && !(p.start <= now && now < p.end); step++) {
      const next = now >= p.end ? this.#compute(duration, p.end) : this.#compute(duration, p.start - 1);
      // Never expected: boundaries that do not meet, `now` between them. The gap is a period of its own.
      if (now >= p.end && now < next.start) return { start: p.end, end: next.start };
      if (now < p.start && now >= next.end) return { start: next.end, end: p.start };
      p = next;
    }
    return p;
  }

  #compute(duration: string, now: number): BudgetPeriod {
    const m = DURATION_PATTERN.exec(duration);
    let n = Math.max(1, Number(m?.[1] ?? 1));
    let unit = m?.[2] ?? 'd';
    if (unit === 'd' && n === 30) [n, unit] = [1, 'mo'];
    if (unit === 'd' && n === 7) [n, unit] = [1, 'w'];
    if (unit === 'h' && n === 24) [n, unit] = [1, 'd'];
    // The wall clock's time, as ms since a 1970 that began on this zone's clock.
    const wall = now + this.#offset(now);
    let start: number;
    let end: number;
    if (unit === 's' || unit === 'm' || unit === 'h') {
      // Within the next larger unit (the minute, the hour, the day): LiteLLM aligns its sub-day resets so.
      const len = n * (unit === 's' ? SECOND : unit === 'm' ? MINUTE : HOUR);
      const outer = unit === 's' ? MINUTE : unit === 'm' ? HOUR : DAY;
      if (len < outer) {
        const base = wall - mod(wall, outer);
        start = base + Math.floor((wall - base) / len) * len;
        end = Math.min(start + len, base + outer);
      } else {
        // As long as the unit above or longer (48h, 90m): counted from 1970.
        start = wall - mod(wall, len);
        end = start + len;
      }
    } else {
      // Day-based periods start at the reset time of day: found on a clock that many seconds behind.
      const shift = this.resetSeconds * SECOND;
      const w = wall - shift;
      if (unit === 'mo') {
        const d = new Date(w);
        const months = d.getUTCFullYear() * 12 + d.getUTCMonth();
        const first = months - mod(months, n);
        start = Date.UTC(Math.floor(first / 12), first % 12, 1);
        end = Date.UTC(Math.floor((first + n) / 12), (first + n) % 12, 1);
      } else {
        const len = n * (unit === 'w' ? 7 * DAY : DAY);
        start = w - mod(w - (unit === 'w' ? FIRST_MONDAY : 0), len);
        end = start + len;
      }
      start += shift;
      end += shift;
    }
    return { start: this.#instant(start), end: this.#instant(end) };
  }

  /** ms to add to an instant for the zone's wall clock at it. */
  #offset(t: number): number {
    const f = this.#format;
    if (f === undefined) return 0;
    let y = 1970;
    let mo = 1;
    let d = 1;
    let h = 0;
    let mi = 0;
    let s = 0;
    for (const p of f.formatToParts(t)) {
      if (p.type === 'year') y = Number(p.value);
      else if (p.type === 'month') mo = Number(p.value);
      else if (p.type === 'day') d = Number(p.value);
      else if (p.type === 'hour') h = Number(p.value);
      else if (p.type === 'minute') mi = Number(p.value);
      else if (p.type === 'second') s = Number(p.value);
    }
    return Date.UTC(y, mo - 1, d, h, mi, s) - (t - mod(t, SECOND));
  }

  /**
   * The instant at which the zone's clock reads `wall`: of a reading it shows twice (daylight saving ends),
   * the first; a reading it skips (daylight saving starts) is the instant it jumps over it.
   */
  #instant(wall: number): number {
    if (this.#format === undefined) return wall;
    const before = this.#offset(wall - DAY);
    const after = this.#offset(wall + DAY);
    const early = wall - before;
    if (early + this.#offset(early) === wall) return early; // on the earlier offset (also the first of a repeat)
    const late = wall - after;
    if (late + this.#offset(late) === wall) return late;
    // In a gap: the jump is in (late, early]; found to the second, where the offset turns to the later one.
    let lo = late;
    let hi = early;
    while (hi - lo > SECOND) {
      const mid = lo + Math.floor((hi - lo) / 2 / SECOND) * SECOND;
      if (this.#offset(mid) === after) hi = mid;
      else lo = mid;
    }
    return hi;
  }
}

function mod(a: number, b: number): number {
  return ((a % b) + b) % b;
}

/** The calendar of budgets that reset at midnight UTC, LiteLLM's default. */
export const UTC_CALENDAR = new BudgetCalendar();

/** The calendar `litellm_settings` asks for (validated by the config schema). */
export function calendarOf(
  settings: { readonly timezone?: string | null | undefined; readonly budget_reset_time?: string | null | undefined } | undefined,
): BudgetCalendar {
  // null is unset, as LiteLLM reads it (`timezone:` with nothing after it).
  const zone = settings?.timezone ?? undefined;
  const time = settings?.budget_reset_time ?? undefined;
  if (zone === undefined && time === undefined) return UTC_CALENDAR;
  return new BudgetCalendar(zone ?? 'UTC', parseTimeOfDay(time ?? '00:00') ?? 0);
}
