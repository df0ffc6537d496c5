/** The console's stylesheet, served as /console/console.css (the CSP allows no inline style). One column on a phone, wider on a desktop. */
export const CONSOLE_CSS = `
:root { --fg: #1b1f24; --muted: #5b6570; --line: #d9dee3; --bg: #f6f7f9; --card: #fff; --ok: #1f883d; --bad: #cf222e; --warn: #9a6700; --accent: #0b5cad; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
a { color: var(--accent); }
code, pre, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px; }
pre { background: #f0f2f4; border: 1px solid var(--line); border-radius: 6px; padding: 8px; overflow: auto; max-height: 420px; white-space: pre-wrap; word-break: break-word; margin: 6px 0; }
h1 { font-size: 22px; margin: 0 0 12px; } h2 { font-size: 18px; margin: 18px 0 8px; } h3 { font-size: 16px; margin: 12px 0 6px; }
.top { display: flex; flex-wrap: wrap; align-items: center; gap: 8px 16px; padding: 10px 16px; background: #14202e; color: #e8edf2; }
.top a.brand { color: #fff; font-weight: 700; text-decoration: none; font-size: 17px; }
.top .who { flex: 1 1 auto; font-size: 13px; min-width: 0; overflow-wrap: anywhere; }
.top code { color: #cfe3ff; }
.top form { margin: 0; }
nav#crumbs { padding: 8px 16px; font-size: 14px; overflow-wrap: anywhere; }
nav#crumbs a + a::before, nav#crumbs a + span::before { content: " / "; color: var(--muted); }
main#view { padding: 0 16px 32px; max-width: 1200px; margin: 0 auto; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; margin: 10px 0; min-width: 0; }
.card.narrow { max-width: 480px; margin: 48px auto; }
.grid { display: grid; grid-template-columns: 1fr; gap: 0 16px; }
@media (min-width: 900px) { .grid.two { grid-template-columns: 1fr 1fr; } }
.row { display: flex; flex-wrap: wrap; gap: 6px 12px; align-items: center; }
.grow { flex: 1 1 200px; min-width: 0; }
.muted { color: var(--muted); font-size: 13px; }
.error { color: var(--bad); }
.wrap { overflow-wrap: anywhere; word-break: break-word; }
label { display: block; font-size: 13px; color: var(--muted); margin: 8px 0 2px; }
label.inline { display: inline-flex; gap: 6px; align-items: center; margin: 8px 0; color: var(--fg); }
input, select, textarea { font: inherit; padding: 6px 8px; border: 1px solid #b9c1c9; border-radius: 6px; width: 100%; max-width: 100%; background: #fff; }
input[type=checkbox] { width: auto; }
button { font: inherit; font-size: 14px; padding: 6px 12px; border-radius: 6px; border: 1px solid #b9c1c9; background: #fff; color: var(--fg); cursor: pointer; margin: 6px 6px 0 0; }
button.primary { background: var(--accent); border-color: var(--accent); color: #fff; }
button.danger { color: var(--bad); border-color: var(--bad); }
.top button { background: transparent; color: #e8edf2; border-color: #5a6b7d; margin: 0; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 999px; font-size: 12px; border: 1px solid var(--line); background: #eef1f4; white-space: nowrap; }
.badge.ok, .badge.succeeded, .badge.enabled, .badge.dispatched { background: #dafbe1; border-color: #aceebb; color: #116329; }
.badge.bad, .badge.failed, .badge.disabled { background: #ffebe9; border-color: #ffcecb; color: #a40e26; }
.badge.pending, .badge.warn { background: #fff8c5; border-color: #eed888; color: #7d4e00; }
.badge.cancelled { background: #eef1f4; color: var(--muted); }
.list { list-style: none; margin: 0; padding: 0; }
.list > li { border-top: 1px solid var(--line); padding: 8px 0; min-width: 0; }
.list > li:first-child { border-top: 0; }
.list > li.new { animation: flash 2s ease-out; }
@keyframes flash { from { background: #fff8c5; } to { background: transparent; } }
.event-row { display: grid; grid-template-columns: 1fr; gap: 2px 12px; text-decoration: none; color: inherit; }
.event-row .badge { justify-self: start; }
@media (min-width: 700px) { .event-row { grid-template-columns: 11em 1fr 7em 20em; align-items: center; } }
.timeline { list-style: none; margin: 6px 0 0; padding: 0 0 0 14px; border-left: 2px solid var(--line); }
.timeline > li { position: relative; padding: 4px 0 8px 6px; }
.timeline > li::before { content: ""; position: absolute; left: -21px; top: 10px; width: 10px; height: 10px; border-radius: 50%; background: var(--line); }
.timeline > li.succeeded::before { background: var(--ok); } .timeline > li.failed::before { background: var(--bad); }
.secret { background: #fff8c5; border: 1px solid #eed888; border-radius: 8px; padding: 10px; margin: 10px 0; }
.notice { padding: 6px 10px; border-radius: 6px; background: #ddf4ff; border: 1px solid #b6e3ff; margin: 8px 0; overflow-wrap: anywhere; }
.notice.bad { background: #ffebe9; border-color: #ffcecb; }
.chart { width: 100%; max-width: 380px; height: auto; display: block; margin: 4px 0; }
.chart .ok { fill: var(--ok); } .chart .bad { fill: var(--bad); } .chart .axis { stroke: var(--line); } .chart text { font-size: 8px; fill: var(--muted); }
.tabs { display: flex; gap: 4px; border-bottom: 1px solid var(--line); margin: 8px 0; flex-wrap: wrap; }
.tabs a { padding: 6px 12px; text-decoration: none; border: 1px solid transparent; border-bottom: 0; border-radius: 6px 6px 0 0; }
.tabs a.active { border-color: var(--line); background: var(--card); color: var(--fg); font-weight: 600; }
form.filters { display: grid; grid-template-columns: 1fr; gap: 0 10px; }
@media (min-width: 700px) { form.filters { grid-template-columns: 2fr 1fr 1fr auto; align-items: end; } }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 6px 0; }
dl.kv dt { color: var(--muted); font-size: 13px; } dl.kv dd { margin: 0; overflow-wrap: anywhere; min-width: 0; }
`;
