/**
 * Budget periods as LiteLLM resets them, in UTC and in a configured time zone, at midnight or a configured
 * time of day, across daylight-saving changes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BudgetCalendar, calendarOf, isTimeZone, parseTimeOfDay, UTC_CALENDAR } from '../../../src/store/calendar.js';
import { budgetPeriodOf } from '../../../src/store/counters.js';

const at = (iso: string): number => Date.parse(iso);
const iso = (p: { start: number; end: number }): [string, string] => [new Date(p.start).toISOString(), new Date(p.end).toISOString()];

/** The zone's wall clock at `t`, as `YYYY-MM-DD HH:MM:SS`. */
function wall(zone: string, t: number): string {
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat('en-US', {
      timeZone: zone,
      hourCycle: 'h23',
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit',
    })
      .formatToParts(t)
      .map((p) => [p.type, p.value]),
  );
  return `${parts['year']}-${parts['month']}-${parts['day']} ${parts['hour']}:${parts['minute']}:${parts['second']}`;
}

test('UTC: daily at midnight, weekly from Monday, monthly from the 1st; 24h, 7d and 30d are the same', () => {
  const now = at('2026-12-09T15:20:00Z'); // a Wednesday
  assert.deepEqual(iso(UTC_CALENDAR.period('1d', now)), ['2026-12-09T00:00:00.000Z', '2026-12-10T00:00:00.000Z']);
  assert.deepEqual(UTC_CALENDAR.period('24h', now), UTC_CALENDAR.period('1d', now));
  assert.deepEqual(iso(UTC_CALENDAR.period('1w', now)), ['2026-12-07T00:00:00.000Z', '2026-12-14T00:00:00.000Z']);
  assert.deepEqual(UTC_CALENDAR.period('7d', now), UTC_CALENDAR.period('1w', now));
  assert.deepEqual(iso(UTC_CALENDAR.period('30d', now)), ['2026-12-01T00:00:00.000Z', '2027-01-01T00:00:00.000Z']);
  assert.deepEqual(UTC_CALENDAR.period('mo', now), UTC_CALENDAR.period('1mo', now));
  assert.deepEqual(UTC_CALENDAR.period(undefined, now), { start: 0, end: Number.MAX_SAFE_INTEGER });
});

test('sub-day periods are aligned within the day, the hour and the minute (the last one ends with it), as LiteLLM aligns them', () => {
  assert.deepEqual(iso(UTC_CALENDAR.period('5h', at('2026-12-09T22:30:00Z'))), ['2026-12-09T20:00:00.000Z', '2026-12-10T00:00:00.000Z']);
  assert.deepEqual(iso(UTC_CALENDAR.period('5h', at('2026-12-10T03:00:00Z'))), ['2026-12-10T00:00:00.000Z', '2026-12-10T05:00:00.000Z']);
  assert.deepEqual(iso(UTC_CALENDAR.period('7m', at('2026-12-09T22:58:00Z'))), ['2026-12-09T22:56:00.000Z', '2026-12-09T23:00:00.000Z']);
  assert.deepEqual(iso(UTC_CALENDAR.period('30s', at('2026-12-09T22:58:45Z'))), ['2026-12-09T22:58:30.000Z', '2026-12-09T22:59:00.000Z']);
  // As long as the unit above or longer: counted from 1970.
  const twoDays = UTC_CALENDAR.period('48h', at('2026-12-09T22:30:00Z'));
  assert.equal(twoDays.end - twoDays.start, 48 * 3_600_000);
  assert.equal(twoDays.start % (48 * 3_600_000), 0);
  const tenDays = UTC_CALENDAR.period('10d', at('2026-12-09T22:30:00Z'));
  assert.deepEqual(iso(tenDays), ['2026-12-03T00:00:00.000Z', '2026-12-13T00:00:00.000Z']);
  assert.equal(tenDays.start % (10 * 86_400_000), 0, 'whole ten-day periods since 1970');
});

test('a time zone: midnight on its clock, across the days its clock changes (23 and 25 hours)', () => {
  const ny = new BudgetCalendar('US/Eastern');
  assert.deepEqual(iso(ny.period('1d', at('2026-12-09T03:00:00Z'))), ['2026-12-08T05:00:00.000Z', '2026-12-09T05:00:00.000Z']);
  // 2026-03-08: clocks go from 02:00 to 03:00 in New York; 2026-11-01: from 02:00 back to 01:00.
  const spring = ny.period('1d', at('2026-03-08T12:00:00Z'));
  assert.deepEqual(iso(spring), ['2026-03-08T05:00:00.000Z', '2026-03-09T04:00:00.000Z']);
  const fall = ny.period('1d', at('2026-11-01T12:00:00Z'));
  assert.deepEqual(iso(fall), ['2026-11-01T04:00:00.000Z', '2026-11-02T05:00:00.000Z']);
  assert.equal(ny.period('1d', fall.end).start, fall.end, 'days follow one another');
  // Weeks from Monday and months from the 1st, at midnight New York time.
  assert.deepEqual(iso(ny.period('1w', at('2026-12-14T03:00:00Z'))), ['2026-12-07T05:00:00.000Z', '2026-12-14T05:00:00.000Z']);
  assert.deepEqual(iso(ny.period('1mo', at('2026-12-01T03:00:00Z'))), ['2026-11-01T04:00:00.000Z', '2026-12-01T05:00:00.000Z']);
  // Half-hour zones: hours on the zone's clock.
  const kolkata = new BudgetCalendar('Asia/Kolkata');
  assert.deepEqual(iso(kolkata.period('1d', at('2026-12-09T20:00:00Z'))), ['2026-12-09T18:30:00.000Z', '2026-12-10T18:30:00.000Z']);
  assert.deepEqual(iso(kolkata.period('1h', at('2026-12-09T20:00:00Z'))), ['2026-12-09T19:30:00.000Z', '2026-12-09T20:30:00.000Z']);
});

test('a day that starts with a skipped midnight starts when the clock jumps past it', () => {
  // Santiago moves its clocks forward at midnight (to 01:00) on a Sunday in September.
  const santiago = new BudgetCalendar('America/Santiago');
  const hours: number[] = [];
  let t = at('2026-08-25T12:00:00Z');
  for (let i = 0; i < 30; i++) {
    const p = santiago.period('1d', t);
    assert.ok(p.start <= t && t < p.end);
    assert.match(wall('America/Santiago', p.start), /00:00:00$|01:00:00$/);
    assert.ok(wall('America/Santiago', p.start - 1000) < wall('America/Santiago', p.start), 'the clock before the start reads earlier');
    hours.push((p.end - p.start) / 3_600_000);
    t = p.end;
  }
  assert.ok(hours.includes(23), `a 23-hour day among ${hours.join(',')}`);
  assert.ok(hours.every((h) => h === 23 || h === 24 || h === 25));
});

test('budget_reset_time: daily, weekly and monthly periods start at that time of day; sub-day periods ignore it', () => {
  const london = new BudgetCalendar('Europe/London', 9 * 3600);
  assert.deepEqual(iso(london.period('1d', at('2026-12-09T08:00:00Z'))), ['2026-12-08T09:00:00.000Z', '2026-12-09T09:00:00.000Z']);
  assert.deepEqual(iso(london.period('1d', at('2026-07-09T08:30:00Z'))), ['2026-07-09T08:00:00.000Z', '2026-07-10T08:00:00.000Z'], 'BST');
  assert.deepEqual(iso(london.period('1mo', at('2026-12-01T08:59:00Z'))), ['2026-11-01T09:00:00.000Z', '2026-12-01T09:00:00.000Z']);
  assert.deepEqual(iso(london.period('1w', at('2026-12-14T10:00:00Z'))), ['2026-12-14T09:00:00.000Z', '2026-12-21T09:00:00.000Z']);
  assert.deepEqual(iso(london.period('1h', at('2026-12-09T08:30:00Z'))), ['2026-12-09T08:00:00.000Z', '2026-12-09T09:00:00.000Z']);
  const noon = new BudgetCalendar('UTC', 12 * 3600);
  assert.deepEqual(iso(noon.period('1d', at('2026-12-09T11:59:59Z'))), ['2026-12-08T12:00:00.000Z', '2026-12-09T12:00:00.000Z']);
});

test("a key's period starts no earlier than its record, on the calendar given", () => {
  const ny = new BudgetCalendar('US/Eastern');
  const made = at('2026-12-09T12:00:00Z');
  const p = budgetPeriodOf({ budgetDuration: '1d', budgetFrom: made }, at('2026-12-09T20:00:00Z'), ny);
  assert.deepEqual(iso(p), ['2026-12-09T12:00:00.000Z', '2026-12-10T05:00:00.000Z']);
});

test('the settings: IANA zones and 24-hour times of day, and what a config without them means', () => {
  assert.equal(isTimeZone('US/Eastern'), true);
  assert.equal(isTimeZone('Asia/Kolkata'), true);
  assert.equal(isTimeZone('Mars/Olympus_Mons'), false);
  assert.equal(parseTimeOfDay('09:00'), 9 * 3600);
  assert.equal(parseTimeOfDay('23:59:30'), 23 * 3600 + 59 * 60 + 30);
  assert.equal(parseTimeOfDay('9:00'), 9 * 3600, 'as LiteLLM reads it');
  for (const bad of ['24:00', '12:60', '9am', '', '12:00:60', '009:00']) assert.equal(parseTimeOfDay(bad), undefined, bad);
  assert.equal(calendarOf({ timezone: null, budget_reset_time: null }), UTC_CALENDAR, 'null is unset');
  assert.equal(calendarOf(undefined), UTC_CALENDAR);
  assert.equal(calendarOf({}), UTC_CALENDAR);
  const c = calendarOf({ timezone: 'Asia/Tokyo', budget_reset_time: '06:30' });
  assert.deepEqual([c.timeZone, c.resetSeconds], ['Asia/Tokyo', 6 * 3600 + 30 * 60]);
  assert.throws(() => new BudgetCalendar('UTC', 86_400), /out of the day/);
  assert.throws(() => new BudgetCalendar('Mars/Olympus_Mons'), RangeError);
});

test("UTC's other names (read without time-zone data) give UTC's periods", () => {
  const now = Date.UTC(2026, 2, 29, 1, 30);
  for (const zone of ['utc', 'Etc/UTC', 'GMT', 'Etc/GMT', 'Zulu', 'Universal', 'Etc/GMT+0', 'UCT']) {
    const c = new BudgetCalendar(zone, 3600);
    for (const d of ['1d', '1w', '1mo', '6h'])
      assert.deepEqual(c.period(d, now), new BudgetCalendar('UTC', 3600).period(d, now), `${zone} ${d}`);
  }
});

test('around a clock change the period holds the time asked about: an hour shown twice, an hour skipped', () => {
  const hm = (h: number, m = 0): number => h * 3600 + m * 60;
  const holds = (cal: BudgetCalendar, duration: string, t: string): [string, string] => {
    const now = at(t);
    const p = cal.period(duration, now);
    assert.ok(p.start <= now && now < p.end, `${cal.timeZone} ${duration} at ${t}: [${iso(p)[0]}, ${iso(p)[1]})`);
    return iso(p);
  };
  // New York's 01:30 comes twice on 2024-11-03: the day starts at the first.
  const ny130 = new BudgetCalendar('US/Eastern', hm(1, 30));
  assert.deepEqual(holds(ny130, '1d', '2024-11-03T06:10:00Z'), ['2024-11-03T05:30:00.000Z', '2024-11-04T06:30:00.000Z']);
  assert.deepEqual(
    holds(ny130, '1d', '2024-11-03T05:45:00Z'),
    holds(new BudgetCalendar('US/Eastern', hm(1, 30)), '1d', '2024-11-03T06:10:00Z'),
  );
  // New York's 02:30 never comes on 2024-03-10: the day starts when the clock jumps (07:00 UTC).
  const ny230 = new BudgetCalendar('US/Eastern', hm(2, 30));
  assert.deepEqual(holds(ny230, '1d', '2024-03-10T07:10:00Z'), ['2024-03-10T07:00:00.000Z', '2024-03-11T06:30:00.000Z']);
  assert.deepEqual(holds(new BudgetCalendar('US/Eastern', hm(2, 30)), '1d', '2024-03-10T06:50:00Z'), [
    '2024-03-09T07:30:00.000Z',
    '2024-03-10T07:00:00.000Z',
  ]);
  holds(new BudgetCalendar('Europe/London'), '30m', '2024-10-27T01:10:00Z');
  holds(new BudgetCalendar('America/Santiago', hm(23, 30)), '1d', '2024-04-07T03:10:00Z');
  holds(new BudgetCalendar('Europe/London'), '90m', '2024-03-31T01:00:00Z');
  for (let m = 0; m < 60; m += 3)
    holds(new BudgetCalendar('Australia/Lord_Howe'), '7m', new Date(at('2024-04-06T15:00:00Z') + m * 60_000).toISOString());
});

test('across the clock changes of a year, in zones that change by an hour, by half an hour and at midnight, periods tile and hold their time', () => {
  const zones = ['US/Eastern', 'Australia/Lord_Howe', 'America/Santiago'];
  // Days with a change in 2024 in one of these zones (each scanned from its start for a day and a half).
  const days = ['2024-03-10', '2024-04-06', '2024-09-07', '2024-10-05', '2024-11-03'];
  for (const zone of zones)
    for (const reset of [0, 2 * 3600 + 15 * 60])
      for (const duration of ['1d', '1w', '5h', '7m']) {
        const cal = new BudgetCalendar(zone, reset);
        for (const day of days) {
          for (let t = at(`${day}T00:00:00Z`); t < at(`${day}T00:00:00Z`) + 36 * 3_600_000; t += 13 * 60_000) {
            const p = new BudgetCalendar(zone, reset).period(duration, t);
            const where = `${zone} ${reset} s ${duration} at ${new Date(t).toISOString()}`;
            assert.ok(p.start <= t && t < p.end, where);
            assert.deepEqual(cal.period(duration, t), p, `cached: ${where}`);
            assert.equal(new BudgetCalendar(zone, reset).period(duration, p.end).start, p.end, `the next begins where it ends: ${where}`);
          }
        }
      }
});
