// The stats page's charts, drawn with uPlot (collector/static/vendor/, put there by
// scripts/vendor-js): MTTA and MTTR per week or month by RTC, site or severity, the
// open-incident count over the page's range, and availability per site per month. Each
// has a CSV link. Everything comes from this collector's API.

/* global uPlot */

const SEVERITIES = ["critical", "major", "minor", "warning", "info"];
const PALETTE = ["#3d7fd9", "#2e9e5b", "#d99a1e", "#b267e6", "#3dc9c9", "#e0607e", "#9aa83a",
  "#8593a3", "#ff8a3d", "#5c6bc0"];
const MONTHS = 12; // of availability, this one included

const charts = new Map(); // figure name -> its uPlot, destroyed before a redraw
let availabilityCsv = ""; // the object URL of the availability CSV, revoked when replaced
let trendAsked = 0; // trend requests made: an answer to an older one is not drawn

function node(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  el.append(...children);
  return el;
}

function css(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(`--${name}`).trim();
}

function colour(group, index) {
  return SEVERITIES.includes(group) ? css(group) : PALETTE[index % PALETTE.length];
}

function label(group) {
  return group === "" ? "(none)" : group;
}

// The page's controls and one figure per chart, made once.
function layout(box) {
  if (box.dataset.ready) return;
  box.dataset.ready = "1";
  const select = (id, options) => node("select", { id },
    ...options.map(([value, text]) => node("option", { value }, text)));
  box.append(
    node("div", { class: "filters" },
      node("label", {}, "Period ", select("chart-period", [["week", "per ISO week"], ["month", "per month"]])),
      node("label", {}, "By ", select("chart-by", [["rtc", "RTC"], ["site", "site"], ["severity", "severity"]]))),
    ...[
      ["mtta", "Mean time to acknowledge (minutes)"],
      ["mttr", "Mean time to resolve (minutes)"],
      ["open", "Open incidents"],
      ["availability", `Availability per site and month (%), last ${MONTHS} months`],
    ].map(([name, title]) => node("figure", { class: "chart", id: `chart-${name}` },
      node("figcaption", {}, title, " ", node("a", { class: "csv", href: "#" }, "CSV")),
      node("div", { class: "plot" }),
      node("p", { class: "nodata muted", hidden: "" }, "No data"))),
  );
  box.querySelector("#chart-by").value = "site";
  for (const id of ["chart-period", "chart-by"]) {
    box.querySelector(`#${id}`).addEventListener("change", () => drawTrend(box.api));
  }
}

// `xs` and one series of values per label (null where there is none), or "No data".
// A count over time is drawn in steps without markers; a mean per period as points
// joined where periods follow each other.
function plot(name, xs, series, { percent = false, steps = false } = {}) {
  const figure = document.getElementById(`chart-${name}`);
  const target = figure.querySelector(".plot");
  charts.get(name)?.destroy();
  charts.delete(name);
  const empty = !xs.length || !series.length;
  const note = figure.querySelector(".nodata");
  note.textContent = "No data";
  note.hidden = !empty;
  figure.dataset.series = String(empty ? 0 : series.length);
  if (empty) return;
  const axis = { stroke: css("muted"), grid: { stroke: css("line") }, ticks: { stroke: css("line") } };
  const options = {
    width: Math.max(320, target.clientWidth || figure.clientWidth || 640),
    height: 240,
    scales: { x: { time: true }, y: percent ? { range: (_u, min) => [Math.min(min, 99), 100] } : {} },
    series: [{}, ...series.map((s) => ({
      label: s.label, stroke: s.colour, width: 2, spanGaps: false,
      points: { show: !steps, size: 7 },
      ...(steps ? { paths: uPlot.paths.stepped({ align: 1 }) } : {}),
    }))],
    axes: [axis, { ...axis, size: 56 }],
  };
  charts.set(name, new uPlot(options, [xs, ...series.map((s) => s.values)], target));
}

function failed(name, err) {
  const figure = document.getElementById(`chart-${name}`);
  charts.get(name)?.destroy();
  charts.delete(name);
  figure.dataset.series = "0";
  const note = figure.querySelector(".nodata");
  note.textContent = `Not available: ${err.message}`;
  note.hidden = false;
}

async function drawTrend(api) {
  const period = document.getElementById("chart-period").value;
  const by = document.getElementById("chart-by").value;
  const query = `/api/v1/stats/trend?period=${period}&by=${by}`;
  for (const name of ["mtta", "mttr"]) {
    document.querySelector(`#chart-${name} a.csv`).href = `${query}&format=csv`;
  }
  const asked = ++trendAsked;
  let found;
  try {
    found = await api(query);
  } catch (err) {
    if (asked === trendAsked) for (const name of ["mtta", "mttr"]) failed(name, err);
    return;
  }
  if (asked !== trendAsked) return; // the selects changed meanwhile
  const xs = found.periods.map((p) => p.start);
  const place = new Map(xs.map((x, i) => [x, i]));
  for (const [name, field] of [["mtta", "mtta_s"], ["mttr", "mttr_s"]]) {
    const series = found.groups.map((group, i) => {
      const values = xs.map(() => null);
      for (const row of found.rows) {
        if (row[by] === group && row[field] !== null) values[place.get(row.start)] = row[field] / 60;
      }
      return { label: label(group), colour: colour(group, i), values };
    });
    plot(name, xs, series);
  }
}

async function drawOpen(api, range) {
  const query = `/api/v1/stats/open?from=${encodeURIComponent(range)}`;
  document.querySelector("#chart-open a.csv").href = `${query}&format=csv`;
  try {
    const { rows } = await api(query);
    const xs = rows.map((r) => r.at);
    const series = [{ label: "all", colour: css("text"), values: rows.map((r) => r.open) },
      ...SEVERITIES.map((s) => ({ label: s, colour: css(s), values: rows.map((r) => r[s]) }))];
    plot("open", xs, series, { steps: true });
  } catch (err) {
    failed("open", err);
  }
}

// Calendar months in UTC, the last `MONTHS` up to now: [start, end] in seconds.
function months(now) {
  const today = new Date(now * 1000);
  return Array.from({ length: MONTHS }, (_, i) => {
    const start = Date.UTC(today.getUTCFullYear(), today.getUTCMonth() - (MONTHS - 1 - i), 1) / 1000;
    const end = Date.UTC(today.getUTCFullYear(), today.getUTCMonth() - (MONTHS - 2 - i), 1) / 1000;
    return [start, Math.min(end, now)];
  });
}

async function drawAvailability(api) {
  const spans = months(Math.floor(Date.now() / 1000));
  const link = document.querySelector("#chart-availability a.csv");
  let answers;
  try {
    answers = await Promise.all(spans.map(([from, to]) =>
      api(`/api/v1/availability?by=site&from=${from}&to=${to}`)));
  } catch (err) {
    link.hidden = true;
    if (err.status === 404) plot("availability", [], []); // not served by this collector
    else failed("availability", err);
    return;
  }
  const sites = [...new Set(answers.flatMap((a) => a.rows.map((r) => r.site)))].sort();
  const series = sites.map((site, i) => ({
    label: label(site),
    colour: PALETTE[i % PALETTE.length],
    values: answers.map((a) => a.rows.find((r) => r.site === site)?.up_pct ?? null),
  }));
  plot("availability", spans.map(([from]) => from), series, { percent: true });
  // the CSV is made here: the API answers one range at a time, the chart is per month
  const columns = ["month", "site", "rtc", "up_pct", "up_s", "down_s", "unknown_s", "maintenance_s"];
  const lines = [columns.join(",")];
  answers.forEach((a, i) => {
    const month = new Date(spans[i][0] * 1000).toISOString().slice(0, 7);
    for (const r of a.rows) {
      lines.push([month, ...columns.slice(1).map((c) => r[c] ?? "")].map(csvCell).join(","));
    }
  });
  if (availabilityCsv) URL.revokeObjectURL(availabilityCsv);
  availabilityCsv = URL.createObjectURL(new Blob([`${lines.join("\r\n")}\r\n`], { type: "text/csv" }));
  link.href = availabilityCsv;
  link.download = "enoc-availability-site-month.csv";
  link.hidden = false;
}

function csvCell(value) {
  const text = String(value);
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

// Draws every chart of the stats page (`api` is the console's fetch, `range` its range).
export async function drawCharts(api, range) {
  const box = document.getElementById("stats-charts");
  box.api = api;
  layout(box);
  await Promise.all([drawTrend(api), drawOpen(api, range), drawAvailability(api)]);
  box.dataset.drawn = String(Number(box.dataset.drawn || 0) + 1);
}
