// End-of-test summary for the forgeline k6 scripts: the full k6 summary as
// JSON (path: __ENV.SUMMARY, default loadtest/results/<script>-summary.json,
// relative to the directory k6 runs in) and a short text summary on stdout
// with every threshold and p(99) of every trend.
//
// Use: export const handleSummary = summaryHandler('smoke');

function fmt(v, isTime) {
  if (v === undefined || v === null) return '-';
  if (typeof v !== 'number') return String(v);
  if (isTime) {
    if (v >= 1000) return `${(v / 1000).toFixed(2)}s`;
    if (v >= 1) return `${v.toFixed(2)}ms`;
    return `${(v * 1000).toFixed(0)}µs`;
  }
  if (Number.isInteger(v)) return String(v);
  return v.toFixed(4);
}

function failedChecks(group, out) {
  for (const c of group.checks || []) {
    if (c.fails > 0) out.push(`${c.name}: ${c.fails} failed, ${c.passes} passed`);
  }
  for (const g of group.groups || []) failedChecks(g, out);
  return out;
}

export function textSummary(data, script) {
  const lines = [];
  const m = data.metrics || {};
  const state = data.state || {};
  lines.push('');
  lines.push(`forgeline k6 ${script}: ${fmt((state.testRunDurationMs || 0) / 1000)}s`);

  // Thresholds first: they decide the exit code (99 when one fails).
  const thr = [];
  let failed = 0;
  for (const name of Object.keys(m).sort()) {
    const t = m[name].thresholds;
    if (!t) continue;
    for (const expr of Object.keys(t)) {
      const ok = t[expr].ok;
      if (!ok) failed += 1;
      thr.push(`  ${ok ? 'PASS' : 'FAIL'}  ${name}: ${expr}`);
    }
  }
  lines.push(`thresholds (${thr.length}, ${failed} failed):`);
  lines.push(...thr);

  // Trends with p(99).
  lines.push('trends:');
  for (const name of Object.keys(m).sort()) {
    const x = m[name];
    if (x.type !== 'trend') continue;
    const v = x.values || {};
    const isTime = x.contains === 'time';
    lines.push(
      `  ${name}: count=${fmt(v.count)} avg=${fmt(v.avg, isTime)} med=${fmt(v.med, isTime)} ` +
        `p(95)=${fmt(v['p(95)'], isTime)} p(99)=${fmt(v['p(99)'], isTime)} max=${fmt(v.max, isTime)}`,
    );
  }
  lines.push('rates, counters and gauges:');
  for (const name of Object.keys(m).sort()) {
    const x = m[name];
    const v = x.values || {};
    if (x.type === 'rate') lines.push(`  ${name}: rate=${fmt(v.rate)} (${fmt(v.passes)} of ${fmt((v.passes || 0) + (v.fails || 0))})`);
    else if (x.type === 'counter') lines.push(`  ${name}: count=${fmt(v.count)} rate=${fmt(v.rate)}/s`);
    else if (x.type === 'gauge') lines.push(`  ${name}: value=${fmt(v.value)} min=${fmt(v.min)} max=${fmt(v.max)}`);
  }
  const fc = failedChecks(data.root_group || {}, []);
  if (fc.length) {
    lines.push('failed checks:');
    for (const f of fc) lines.push(`  ${f}`);
  }
  lines.push('');
  return lines.join('\n');
}

export function summaryHandler(script) {
  return function handleSummary(data) {
    const path = __ENV.SUMMARY || `loadtest/results/${script}-summary.json`;
    return {
      [path]: JSON.stringify(data, null, 2),
      stdout: textSummary(data, script),
    };
  };
}
