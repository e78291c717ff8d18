// Disclosures over time as a stacked SVG bar chart (issue 8 §2): released, redacted, withheld resources
// and refused requests per time bin, with the same numbers as a table for screen readers.
import { h, svg } from './dom.js';

export const SERIES = [
  { key: 'released', label: 'released', className: 'series-released' },
  { key: 'redacted', label: 'redacted', className: 'series-redacted' },
  { key: 'withheld', label: 'withheld', className: 'series-withheld' },
  { key: 'refused', label: 'refused requests', className: 'series-refused' },
];

const MINUTE = 60_000;
const BIN_SIZES = [MINUTE, 5 * MINUTE, 15 * MINUTE, 60 * MINUTE, 6 * 60 * MINUTE, 24 * 60 * MINUTE, 7 * 24 * 60 * MINUTE, 30 * 24 * 60 * MINUTE, 365 * 24 * 60 * MINUTE];
const MAX_BINS = 40;

/** @param {ReturnType<import('./audit-model.js').summarise>[]} events */
export function binEvents(events) {
  const rest = events.filter((e) => e.kind === 'rest' && e.recorded);
  if (rest.length === 0) return { size: MINUTE, bins: [] };
  const times = rest.map((e) => Date.parse(e.recorded)).filter((t) => !Number.isNaN(t));
  const min = Math.min(...times);
  const max = Math.max(...times);
  const size = BIN_SIZES.find((s) => Math.floor(max / s) - Math.floor(min / s) + 1 <= MAX_BINS) ?? BIN_SIZES[BIN_SIZES.length - 1];
  const first = Math.floor(min / size) * size;
  const count = Math.floor(max / size) - Math.floor(min / size) + 1;
  const bins = Array.from({ length: count }, (_, i) => ({ start: first + i * size, released: 0, redacted: 0, withheld: 0, refused: 0 }));
  for (const e of rest) {
    const t = Date.parse(e.recorded);
    if (Number.isNaN(t)) continue;
    const bin = bins[Math.floor((t - first) / size)];
    bin.released += e.counts.released;
    bin.redacted += e.counts.redacted;
    bin.withheld += e.counts.withheld;
    if (e.refused) bin.refused += 1;
  }
  return { size, bins };
}

function binLabel(start, size) {
  const iso = new Date(start).toISOString();
  if (size >= 24 * 60 * MINUTE) return iso.slice(0, 10);
  return `${iso.slice(0, 10)} ${iso.slice(11, 16)}Z`;
}

function binSizeText(size) {
  const minutes = Math.round(size / MINUTE);
  if (minutes < 60) return `${minutes} minute${minutes === 1 ? '' : 's'}`;
  if (minutes < 24 * 60) return `${minutes / 60} hour${minutes === 60 ? '' : 's'}`;
  const days = minutes / (24 * 60);
  return `${days} day${days === 1 ? '' : 's'}`;
}

function niceMax(value) {
  if (value <= 5) return 5;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * magnitude >= value) return step * magnitude;
  return 10 * magnitude;
}

/** @param {ReturnType<import('./audit-model.js').summarise>[]} events @param {string} caption */
export function disclosureChart(events, caption) {
  const { size, bins } = binEvents(events);
  const totals = Object.fromEntries(SERIES.map((s) => [s.key, bins.reduce((n, b) => n + b[s.key], 0)]));
  const summary = SERIES.map((s) => `${totals[s.key]} ${s.label}`).join(', ');
  const figure = h('figure', { class: 'chart', id: 'disclosure-chart' });
  const legend = h('ul', { class: 'legend', 'aria-hidden': 'true' }, SERIES.map((s) => h('li', null, h('span', { class: `swatch ${s.className}` }), `${s.label} (${totals[s.key]})`)));
  figure.append(h('figcaption', null, caption), legend);
  if (bins.length === 0) {
    figure.append(h('p', { class: 'muted' }, 'No disclosures in the loaded events.'));
    return figure;
  }
  const width = 800;
  const height = 220;
  const pad = { left: 44, right: 8, top: 10, bottom: 34 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const top = niceMax(Math.max(...bins.map((b) => SERIES.reduce((n, s) => n + b[s.key], 0))));
  const barW = plotW / bins.length;
  const titleId = 'chart-title';
  const descId = 'chart-desc';
  const chart = svg('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-labelledby': `${titleId} ${descId}`, class: 'chart-svg' });
  chart.append(svg('title', { id: titleId }, 'Disclosures over time'), svg('desc', { id: descId }, `${bins.length} bars of ${binSizeText(size)} each: ${summary}.`));
  for (let i = 0; i <= 4; i++) {
    const value = (top / 4) * i;
    const y = pad.top + plotH - (value / top) * plotH;
    chart.append(svg('line', { x1: pad.left, x2: width - pad.right, y1: y, y2: y, class: 'gridline' }));
    chart.append(svg('text', { x: pad.left - 6, y: y + 4, 'text-anchor': 'end', class: 'axis-label' }, String(Math.round(value * 10) / 10)));
  }
  const labelEvery = Math.ceil(bins.length / 6);
  bins.forEach((bin, i) => {
    let y = pad.top + plotH;
    const w = Math.max(1, Math.min(barW * 0.8, 48));
    const x = pad.left + i * barW + (barW - w) / 2;
    const group = svg('g', { class: 'bar' });
    group.append(svg('title', {}, `${binLabel(bin.start, size)}: ${SERIES.map((s) => `${bin[s.key]} ${s.label}`).join(', ')}`));
    for (const s of SERIES) {
      if (bin[s.key] === 0) continue;
      const hgt = (bin[s.key] / top) * plotH;
      y -= hgt;
      group.append(svg('rect', { x, y, width: w, height: hgt, class: s.className }));
    }
    chart.append(group);
    if (i % labelEvery === 0) chart.append(svg('text', { x: x, y: height - pad.bottom + 16, class: 'axis-label' }, binLabel(bin.start, size)));
  });
  chart.append(svg('line', { x1: pad.left, x2: width - pad.right, y1: pad.top + plotH, y2: pad.top + plotH, class: 'axis' }));
  figure.append(chart);
  const table = h(
    'table',
    { class: 'data-table' },
    h('caption', null, 'Disclosures per time bin'),
    h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'From'), SERIES.map((s) => h('th', { scope: 'col' }, s.label)))),
    h('tbody', null, bins.filter((b) => SERIES.some((s) => b[s.key] > 0)).map((b) => h('tr', null, h('th', { scope: 'row' }, binLabel(b.start, size)), SERIES.map((s) => h('td', null, String(b[s.key])))))),
  );
  figure.append(h('details', null, h('summary', null, 'Chart data as a table'), table));
  return figure;
}
