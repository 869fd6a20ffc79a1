// magorder's page: calls the service's own API, nothing else.
"use strict";

const MP_CLASSES = ["FM", "NM", "FiM", "AFM"];
const EXPERIMENT_CLASSES = ["FM", "AFM", "NM"];
const FIELD_ERRORS = {
  formula: "formula-error",
  density: "density-error",
  structure: "structure-error",
  file: "structure-error",
  format: "structure-error",
};

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
}

function percent(p) {
  return `${(100 * p).toFixed(1)} %`;
}

function bars(probabilities, order, label) {
  const top = order.reduce((a, b) => (probabilities[b] > probabilities[a] ? b : a));
  const grid = el("div", { class: "bars", role: "list", "aria-label": label });
  for (const name of order) {
    const p = probabilities[name];
    const fill = el("span");
    fill.style.width = `${(100 * p).toFixed(1)}%`;
    const attributes = { role: "listitem", "aria-label": `${name} ${percent(p)}` };
    grid.append(
      el("span", { class: name === top ? "top" : "" }, name),
      el("div", { class: "bar", ...attributes }, fill),
      el("span", { class: "value" }, percent(p)),
    );
  }
  return grid;
}

function warningsList(warnings) {
  if (!warnings || warnings.length === 0) return el("p", { class: "hint" }, "No warnings.");
  return el("ul", { class: "warnings" }, ...warnings.map((w) => el("li", {}, w)));
}

const SOURCES = {
  given: "as given",
  structure: "computed from the structure",
  estimated: "estimated from the composition",
};

function renderAnswer(body) {
  const answer = document.getElementById("answer");
  answer.replaceChildren();
  const used = `${body.reduced_formula} (sent as ${body.formula}), density ${body.density} g/cm³ `
    + `${SOURCES[body.density_source] || body.density_source}`;
  answer.append(el("p", { id: "used" }, `Predicted for ${used}.`));
  const mp = el("div", { class: "answer-block", id: "mp-answer" },
    el("h3", {}, `Materials Project's DFT label: ${body.prediction}`),
    bars(body.probabilities, MP_CLASSES, "Materials Project label probabilities"),
    el("p", { id: "magnetic" }, `Magnetic at all (FM, FiM or AFM): `
      + `${Math.round(100 * body.magnetic_probability)} %`
      + (body.member_spread === null || body.member_spread === undefined ? ""
        : `; the model's members differ by up to ${body.member_spread.toFixed(2)}.`)),
    warningsList(body.warnings));
  answer.append(mp);
  const experiment = body.experiment;
  if (experiment) {
    const t = experiment.ordering_temperature;
    const kind = t.kind === "curie" ? "Curie temperature T_C" : "Néel temperature T_N";
    const interval = `${Math.round(t.low_kelvin)}–${Math.round(t.high_kelvin)} K`;
    answer.append(el("div", { class: "answer-block", id: "experiment-answer" },
      el("h3", {}, `What experiment would find: ${experiment.prediction}`),
      bars(experiment.probabilities, EXPERIMENT_CLASSES, "Experimental answer probabilities"),
      el("p", {}, `${kind} ≈ ${Math.round(t.kelvin)} K `
        + `(${Math.round(100 * t.interval)} % interval ${interval}), if it orders.`),
      warningsList(experiment.warnings)));
  }
  if (body.structure) {
    const s = body.structure;
    answer.append(el("p", { class: "hint" }, `Structure read as ${s.format}: ${s.n_sites} sites, `
      + `${s.is_ordered ? "ordered" : "disordered (partial occupancies)"}.`));
  }
  answer.hidden = false;
}

function clearErrors(form) {
  for (const node of form.querySelectorAll(".error")) node.textContent = "";
  for (const node of form.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
}

function showError(error, fallbackId) {
  const id = FIELD_ERRORS[error.field] || fallbackId;
  const target = document.getElementById(id);
  target.textContent = error.message;
  const input = document.querySelector(`[aria-describedby="${id}"]`);
  if (input) {
    input.setAttribute("aria-invalid", "true");
    input.focus();
  }
}

async function errorOf(response) {
  try {
    const body = await response.json();
    if (body.error) return body.error;
  } catch (_) { /* not a JSON error body */ }
  return { message: `the service answered ${response.status} ${response.statusText}` };
}

async function predictOne(event) {
  event.preventDefault();
  const form = event.target;
  clearErrors(form);
  const button = document.getElementById("predict-button");
  const file = document.getElementById("structure").files[0];
  let request;
  if (file) {
    const data = new FormData();
    data.append("file", file, file.name);
    request = fetch("/predict/structure", { method: "POST", body: data });
  } else {
    const body = { formula: document.getElementById("formula").value };
    const density = document.getElementById("density").value.trim();
    if (density !== "") {
      const number = Number(density);
      body.density = Number.isFinite(number) ? number : density;  // the API names the problem
    }
    request = fetch("/predict", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
  }
  button.disabled = true;
  try {
    const response = await request;
    if (response.ok) renderAnswer(await response.json());
    else showError(await errorOf(response), "one-error");
  } catch (exc) {
    showError({ message: `cannot reach the service: ${exc}` }, "one-error");
  } finally {
    button.disabled = false;
  }
}

// CSV as the service writes it (RFC 4180: quoted cells may hold commas, quotes, newlines).
function parseCsv(text) {
  const rows = [];
  let row = [];
  let cell = "";
  let quoted = false;
  for (let i = 0; i < text.length; i += 1) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { cell += '"'; i += 1; }
      else if (c === '"') quoted = false;
      else cell += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") { row.push(cell); cell = ""; }
    else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i += 1;
      row.push(cell); rows.push(row); row = []; cell = "";
    } else cell += c;
  }
  if (cell !== "" || row.length > 0) { row.push(cell); rows.push(row); }
  return rows;
}

function sortBy(table, column, header) {
  const body = table.tBodies[0];
  const ascending = header.getAttribute("aria-sort") !== "ascending";
  for (const th of table.tHead.rows[0].cells) th.removeAttribute("aria-sort");
  header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  const key = (tr) => tr.cells[column].textContent;
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const x = key(a);
    const y = key(b);
    const nx = Number(x);
    const ny = Number(y);
    const order = x !== "" && y !== "" && Number.isFinite(nx) && Number.isFinite(ny)
      ? nx - ny : x.localeCompare(y);
    return ascending ? order : -order;
  });
  body.append(...rows);
}

function renderTable(text) {
  const [header, ...rows] = parseCsv(text);
  const table = document.getElementById("results");
  table.replaceChildren();
  const errorColumn = header.indexOf("error");
  const head = el("tr");
  header.forEach((name, column) => {
    const button = el("button", { type: "button" }, name);
    const th = el("th", { scope: "col" }, button);
    button.addEventListener("click", () => sortBy(table, column, th));
    head.append(th);
  });
  table.append(el("thead", {}, head));
  const body = el("tbody");
  for (const cells of rows) {
    const failed = errorColumn >= 0 && cells[errorColumn];
    body.append(el("tr", failed ? { class: "failed" } : {}, ...cells.map((c) => el("td", {}, c))));
  }
  table.append(body);
  table.hidden = false;
  return rows;
}

async function predictTable(event) {
  event.preventDefault();
  const form = event.target;
  clearErrors(form);
  const files = Array.from(document.getElementById("table-files").files);
  const progress = document.getElementById("table-progress");
  const download = document.getElementById("download");
  if (files.length === 0) {
    showError({ message: "choose a CSV file or structure files first" }, "table-error");
    return;
  }
  const data = new FormData();
  const single = files.length === 1;
  for (const file of files) data.append(single ? "file" : "files", file, file.name);
  const isCsv = single && !/\.(cif|mcif|vasp|json|xsf)$|^(POSCAR|CONTCAR)/i.test(files[0].name);
  const total = isCsv ? Math.max(0, parseCsv(await files[0].text()).length - 1) : files.length;
  const button = document.getElementById("table-button");
  button.disabled = true;
  download.hidden = true;
  progress.textContent = `Predicting ${total} rows…`;
  try {
    const response = await fetch("/predict/table", { method: "POST", body: data });
    if (!response.ok) {
      progress.textContent = "";
      showError(await errorOf(response), "table-error");
      return;
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
      const done_rows = Math.max(0, parseCsv(text).length - 1);
      progress.textContent = `${done_rows} of ${total} rows predicted…`;
    }
    const rows = renderTable(text);
    const failed = rows.filter((r) => r[r.length - 1]).length;
    progress.textContent = `${rows.length} rows: ${rows.length - failed} predicted, `
      + `${failed} failed (shown in red, with their error). Click a column to sort.`;
    download.href = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
    download.download = isCsv ? files[0].name.replace(/\.csv$/i, "") + "-magorder.csv"
      : "structures-magorder.csv";
    download.hidden = false;
  } catch (exc) {
    showError({ message: `cannot reach the service: ${exc}` }, "table-error");
  } finally {
    button.disabled = false;
  }
}

async function describeModel() {
  const status = document.getElementById("model-status");
  try {
    const model = await (await fetch("/model")).json();
    const parts = [`Materials Project head ${model.model_version}`
      + (model.metrics && model.metrics.macro_f1 !== undefined
        ? ` (macro-F1 ${model.metrics.macro_f1.toFixed(3)} on held-out formulas)` : "")];
    if (!model.trained) parts[0] += " — an UNTRAINED placeholder: its answers mean nothing";
    if (model.experiment) parts.push(`experiment head ${model.experiment.model_version}`);
    if (model.density) parts.push(`density estimator ${model.density.model_version}`);
    status.textContent = `Serving ${parts.join(", ")}.`;
  } catch (exc) {
    status.textContent = `The service did not describe its model: ${exc}`;
  }
  try {
    const response = await fetch("/model/card.html");
    if (!response.ok) return;
    const card = new DOMParser().parseFromString(await response.text(), "text/html");
    const targets = document.getElementById("targets");
    for (const heading of card.querySelectorAll("h2, h3")) {
      const table = heading.nextElementSibling;
      if (heading.textContent.trim() !== "Targets" || !table || table.tagName !== "TABLE") continue;
      let owner = heading.previousElementSibling;
      while (owner && owner.tagName !== "H1" && owner.tagName !== "H2") owner = owner.previousElementSibling;
      const title = heading.tagName === "H2" ? "Materials Project head" : (owner ? owner.textContent : "");
      targets.append(el("h3", {}, `Targets: ${title.replace(/^magorder /, "")}`), document.importNode(table, true));
    }
  } catch (_) { /* the card is optional */ }
}

document.getElementById("one-form").addEventListener("submit", predictOne);
document.getElementById("table-form").addEventListener("submit", predictTable);
describeModel();
