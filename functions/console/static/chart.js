// Two small SVG charts drawn without a library: horizontal bars (cost per database) and a half-circle gauge
// (spend against the budget). Both are role="img" with a text label; the page also shows the figures as a table.

const SVG = "http://www.w3.org/2000/svg";

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function shorten(label, max) {
  return label.length > max ? `${label.slice(0, max - 1)}…` : label;
}

/**
 * @param {{label: string, value: number, note?: string, muted?: boolean}[]} items value in cents
 * @param {(cents: number) => string} format
 * @param {string} title accessible name
 */
export function barChart(items, format, title) {
  const rowHeight = 30;
  const labelWidth = 190;
  const barSpace = 300;
  const width = labelWidth + barSpace + 110;
  const height = Math.max(1, items.length) * rowHeight + 10;
  const svg = el("svg", {
    viewBox: `0 0 ${width} ${height}`,
    class: "chart bars",
    role: "img",
    "aria-label": title,
    preserveAspectRatio: "xMinYMin meet",
  });
  svg.append(el("title", {}, title));
  const max = Math.max(1, ...items.map((i) => i.value));
  items.forEach((item, index) => {
    const y = 5 + index * rowHeight;
    const group = el("g", {
      class: item.muted ? "bar muted" : "bar",
      "data-label": item.label,
      "data-value": item.value,
    });
    const label = el(
      "text",
      {
        x: labelWidth - 8,
        y: y + rowHeight / 2,
        class: "bar-label",
        "text-anchor": "end",
        "dominant-baseline": "middle",
      },
      shorten(item.label, 26),
    );
    label.append(el("title", {}, item.note ? `${item.label} (${item.note})` : item.label));
    const w = item.value > 0 ? Math.max(2, (item.value / max) * barSpace) : 0;
    const bar = el("rect", {
      x: labelWidth,
      y: y + 5,
      width: w.toFixed(1),
      height: rowHeight - 10,
      rx: 3,
      class: "bar-fill",
    });
    const value = el(
      "text",
      { x: labelWidth + w + 6, y: y + rowHeight / 2, class: "bar-value", "dominant-baseline": "middle" },
      format(item.value) + (item.note ? ` · ${item.note}` : ""),
    );
    group.append(label, bar, value);
    svg.append(group);
  });
  return svg;
}

/** Half-circle gauge: the arc fills with spend / limit (full, and marked "over", at or past the limit). */
export function gauge(totalCents, limitCents, format) {
  const exceeded = totalCents >= limitCents;
  const ratio = limitCents > 0 ? Math.min(1, totalCents / limitCents) : 1;
  const percent = limitCents > 0 ? Math.round((totalCents / limitCents) * 100) : null;
  const state = exceeded ? "over" : ratio >= 0.8 ? "warn" : "ok";
  const share = percent === null ? "" : ` (${percent}%)`;
  const over = exceeded ? ": budget exceeded" : "";
  const label = `Spent ${format(totalCents)} of a ${format(limitCents)} budget${share}${over}`;
  const svg = el("svg", { viewBox: "0 0 220 130", class: `chart gauge ${state}`, role: "img", "aria-label": label });
  svg.append(el("title", {}, label));
  const arc = "M 20 110 A 90 90 0 0 1 200 110";
  svg.append(el("path", { d: arc, class: "gauge-track", pathLength: 100 }));
  const fill = el("path", {
    d: arc,
    class: "gauge-fill",
    pathLength: 100,
    "stroke-dasharray": `${(ratio * 100).toFixed(2)} 100`,
  });
  svg.append(fill);
  svg.append(
    el(
      "text",
      { x: 110, y: 88, "text-anchor": "middle", class: "gauge-percent" },
      percent === null ? "—" : `${percent}%`,
    ),
  );
  svg.append(
    el(
      "text",
      { x: 110, y: 112, "text-anchor": "middle", class: "gauge-caption" },
      `${format(totalCents)} of ${format(limitCents)}`,
    ),
  );
  return svg;
}
