// The dashboard: a job list that refreshes itself, a job page with live charts, and a form
// to upload a dataset and start a job. It only uses the public JSON API, with the same key.
"use strict";

const app = document.getElementById("app");
let timer = null;
let charts = [];

function key() { return localStorage.getItem("finetune-api-key") || ""; }

async function api(path, options = {}) {
  const headers = options.headers || {};
  if (key()) headers.Authorization = "Bearer " + key();
  const response = await fetch(path, { ...options, headers });
  if (!response.ok) {
    let message = "HTTP " + response.status;
    try {
      const body = await response.json();
      message = body.error.message + (body.error.param ? " (" + body.error.param + ")" : "");
    } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

const json = async (path, options) => (await api(path, options)).json();

function age(iso) {
  const seconds = (Date.now() - new Date(iso).getTime()) / 1000;
  if (seconds < 90) return Math.round(seconds) + " s";
  if (seconds < 5400) return Math.round(seconds / 60) + " min";
  return Math.round(seconds / 3600) + " h";
}

function finalMetric(job) {
  const m = job.metrics || {};
  for (const name of ["matthews_correlation", "accuracy", "pearson", "mse"]) {
    if (name in m) return name + " " + m[name].toFixed(4);
  }
  return "";
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

// -- job list and the new-job form --------------------------------------------------------

async function showList() {
  app.replaceChildren(document.getElementById("list-view").content.cloneNode(true));
  setupForm();
  const refresh = async () => {
    try {
      const page = await json("/v1/jobs?limit=50");
      const body = document.querySelector("#jobs tbody");
      body.replaceChildren();
      for (const job of page.data) {
        const row = body.insertRow();
        const link = document.createElement("a");
        link.href = "#/jobs/" + job.id;
        link.textContent = job.id.slice(0, 16) + "…";
        row.insertCell().append(link);
        cell(row, job.status, "status " + job.status);
        cell(row, job.model);
        cell(row, Math.round(job.progress.percent) + "%");
        cell(row, age(job.created_at));
        cell(row, finalMetric(job));
      }
    } catch (error) {
      document.getElementById("form-error").textContent = error.message;
    }
  };
  const refreshSweeps = async () => {
    const page = await json("/v1/sweeps?limit=20");
    const body = document.querySelector("#sweeps tbody");
    body.replaceChildren();
    for (const sweep of page.data) {
      const row = body.insertRow();
      const link = document.createElement("a");
      link.href = "#/sweeps/" + sweep.id;
      link.textContent = sweep.id.slice(0, 18) + "…";
      row.insertCell().append(link);
      cell(row, sweep.status, "status " + sweep.status);
      cell(row, sweep.model);
      cell(row, `${sweep.trials.length}/${sweep.max_trials}`);
      cell(row, age(sweep.created_at));
      const best = sweep.best_trial;
      cell(row, best && best.value !== null ? `${sweep.metric} ${best.value.toFixed(4)}` : "");
    }
  };
  const both = async () => { await refresh(); await refreshSweeps().catch(() => {}); };
  await both();
  timer = setInterval(both, 2000);
}

async function setupForm() {
  const models = document.getElementById("model");
  try {
    for (const model of await json("/v1/models")) models.add(new Option(model.id, model.id));
  } catch (error) {
    document.getElementById("form-error").textContent = error.message;
  }
  const file = document.getElementById("file");
  const error = document.getElementById("form-error");
  let uploaded = null;
  file.addEventListener("change", async () => {
    error.textContent = "";
    uploaded = null;
    try {
      uploaded = await upload(file.files[0]);
    } catch (e) {
      error.textContent = e.message;
      return;
    }
    const pickers = ["text-column", "pair-column", "label-column"].map((id) => document.getElementById(id));
    for (const picker of pickers) {
      const keep = picker.id === "pair-column" ? [new Option("(none)", "")] : [];
      picker.replaceChildren(...keep, ...uploaded.columns.map((c) => new Option(c, c)));
      picker.disabled = false;
    }
    const guess = (names) => uploaded.columns.find((c) => names.includes(c.toLowerCase()));
    pickers[0].value = guess(["text", "sentence", "review"]) || uploaded.columns[0];
    pickers[2].value = guess(["label", "labels", "sentiment", "class"]) || uploaded.columns.at(-1);
    document.getElementById("submit").disabled = false;
    await showDataReport(uploaded.id);
  });
  for (const id of ["text-column", "pair-column", "label-column", "model", "task"]) {
    document.getElementById(id).addEventListener("change", () => uploaded && showDataReport(uploaded.id));
  }
  document.getElementById("new-job").addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    try {
      const body = {
        model: models.value,
        task: document.getElementById("task").value,
        training_file: uploaded.id,
        text_column: document.getElementById("text-column").value,
        label_column: document.getElementById("label-column").value,
        hyperparameters: {
          epochs: autoOrNumber("epochs", "Epochs"),
          learning_rate: autoOrNumber("lr", "Learning rate"),
          batch_size: autoOrNumber("batch", "Batch size"),
        },
      };
      const maxSteps = document.getElementById("max-steps").value;
      if (maxSteps) body.hyperparameters.max_steps = Number(maxSteps);
      const pair = document.getElementById("pair-column").value;
      if (pair) body.text_pair_column = pair;
      const vfile = document.getElementById("vfile").files[0];
      if (vfile) body.validation_file = (await upload(vfile)).id;
      const job = await json("/v1/jobs", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      location.hash = "#/jobs/" + job.id;
    } catch (e) {
      error.textContent = e.message;
    }
  });
}

// A hyperparameter field of the form: "auto" (or left blank) lets the worker choose from the
// data set, as the API does by default; anything else must be a number.
function autoOrNumber(id, label) {
  const raw = document.getElementById(id).value.trim().toLowerCase();
  if (raw === "" || raw === "auto") return "auto";
  const value = Number(raw);
  if (!Number.isFinite(value)) throw new Error(`${label}: a number, or "auto"`);
  return value;
}

// The data report of the chosen file and columns, in the chosen model's tokens: problems (a job
// would be refused) in red, warnings in amber.
async function showDataReport(fileId) {
  const box = document.getElementById("data-report");
  const task = document.getElementById("task").value;
  const params = new URLSearchParams({
    text_column: document.getElementById("text-column").value,
    model: document.getElementById("model").value,
    task,
  });
  if (task !== "masked_lm") params.set("label_column", document.getElementById("label-column").value);
  const pair = document.getElementById("pair-column").value;
  if (pair) params.set("text_pair_column", pair);
  let report;
  try {
    report = await json(`/v1/files/${fileId}/report?` + params);
  } catch (e) {
    box.textContent = e.message;
    return;
  }
  const summary = document.createElement("p");
  const labels = Object.entries(report.label_counts).map(([k, v]) => `${k}: ${v}`).join(", ");
  const tokens = report.token_lengths;
  summary.textContent = `${report.rows} rows` + (labels ? ` · ${labels}` : "") +
    (tokens ? ` · tokens median ${tokens.p50}, p95 ${tokens.p95}, ${(100 * tokens.truncated_share).toFixed(1)}% truncated` : "");
  const findings = document.createElement("ul");
  for (const [kind, messages] of [["problem", report.problems], ["warning", report.warnings]]) {
    for (const message of messages) {
      const item = document.createElement("li");
      item.className = kind;
      item.textContent = message;
      findings.append(item);
    }
  }
  box.replaceChildren(summary, findings);
}

async function upload(file) {
  const form = new FormData();
  form.append("file", file);
  return json("/v1/files", { method: "POST", body: form });
}

// -- one job ----------------------------------------------------------------------------------

function lineChart(canvas, label) {
  const chart = new Chart(canvas, {
    type: "line",
    data: { datasets: [] },
    options: {
      animation: false,
      parsing: false,
      scales: { x: { type: "linear", title: { display: true, text: "step" } } },
      plugins: { legend: { display: true } },
    },
  });
  chart.canvas.setAttribute("aria-label", label);
  charts.push(chart);
  return chart;
}

async function allEvents(jobId) {
  let events = [];
  let after = null;
  for (;;) {
    const page = await json(`/v1/jobs/${jobId}/events?limit=1000` + (after ? "&after=" + after : ""));
    events = events.concat(page.data);
    if (!page.has_more) return events;
    after = page.data.at(-1).id;
  }
}

async function showJob(jobId) {
  app.replaceChildren(document.getElementById("job-view").content.cloneNode(true));
  const lossChart = lineChart(document.getElementById("loss-chart"), "training loss");
  const metricChart = lineChart(document.getElementById("metric-chart"), "validation metrics");
  document.getElementById("cancel").addEventListener("click", async () => {
    try {
      await api(`/v1/jobs/${jobId}/cancel`, { method: "POST" });
      refresh();
    } catch (e) {
      document.getElementById("job-error").textContent = e.message;
    }
  });
  document.getElementById("download").addEventListener("click", async () => {
    const blob = await (await api(`/v1/jobs/${jobId}/artifacts/model.tar.gz`)).blob();
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = jobId + ".tar.gz";
    document.body.append(link);
    link.click();
    link.remove();
  });

  document.getElementById("try-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = document.getElementById("try-error");
    error.textContent = "";
    try {
      const answer = await json(`/v1/jobs/${jobId}/predictions`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ inputs: [{ text: document.getElementById("try-text").value }] }),
      });
      const prediction = answer.data[0];
      if (prediction.entities) {
        tableOf(document.getElementById("try-result"), ["entity", "text", "characters", "score"],
          prediction.entities.map((e) => [e.entity, e.text, `${e.start}-${e.end}`, e.score]));
      } else if (prediction.fills) {
        tableOf(document.getElementById("try-result"), ["mask", "token", "probability"],
          prediction.fills.flatMap((fill, i) => fill.map((f) => [i + 1, f.token, f.score])));
      } else {
        const chosen = new Set(prediction.labels || []);
        const rows = prediction.value != null
          ? [["value", prediction.value]]
          : Object.entries(prediction.scores).sort((a, b) => b[1] - a[1])
            .map(([label, p]) => [chosen.has(label) ? `${label} ✓` : label, p]);
        tableOf(document.getElementById("try-result"), ["label", "probability"], rows);
      }
      if (prediction.truncated) error.textContent = `truncated: ${prediction.tokens} tokens`;
    } catch (e) {
      error.textContent = e.message;
    }
  });

  const refresh = async () => {
    let job;
    try {
      job = await json(`/v1/jobs/${jobId}`);
    } catch (e) {
      document.getElementById("job-error").textContent = e.message;
      return;
    }
    const p = job.progress;
    document.getElementById("job-title").textContent = job.id + " · " + job.model;
    const status = document.getElementById("job-status");
    status.textContent = job.status;
    status.className = "status " + job.status;
    document.getElementById("job-progress").textContent =
      `epoch ${p.epoch}/${p.epochs} · step ${p.step}/${p.total_steps} · ` +
      `${p.tokens_per_second ? Math.round(p.tokens_per_second) + " tokens/s" : ""}` +
      `${p.eta_seconds != null && p.percent < 100 ? " · ETA " + Math.round(p.eta_seconds) + " s" : ""}`;
    document.getElementById("job-bar").style.width = p.percent + "%";
    document.getElementById("job-error").textContent = job.error ? job.error.code + ": " + job.error.message : "";
    document.getElementById("cancel").disabled = ["succeeded", "failed", "cancelled"].includes(job.status);
    document.getElementById("download").disabled = !job.artifacts.model;

    const events = await allEvents(jobId);
    // What each "auto" became, and why: the worker's stage event once the data is loaded.
    const chosen = events.find((e) => e.type === "stage" && e.data.auto)?.data.auto ?? {};
    const hyper = document.getElementById("hyper");
    hyper.replaceChildren();
    for (const [name, value] of Object.entries(job.hyperparameters)) {
      const row = hyper.insertRow();
      cell(row, name);
      const choice = value === "auto" ? chosen[name] : undefined;
      const shown = cell(row, choice ? `auto: ${choice.value ?? "none"}` : String(value));
      if (choice) shown.title = choice.reason;
    }

    const losses = events.filter((e) => e.type === "progress" && e.data.loss != null)
      .map((e) => ({ x: e.data.step, y: e.data.loss }));
    lossChart.data.datasets = [{ label: "loss", data: losses, borderColor: "#3465a4", pointRadius: 2 }];
    lossChart.update();
    const colors = ["#cc0000", "#4e9a06", "#75507b", "#c4a000", "#06989a"];
    const names = job.history.length ? Object.keys(job.history[0]).filter((k) => !["epoch", "step"].includes(k)) : [];
    metricChart.data.datasets = names.map((name, i) => ({
      label: name, data: job.history.map((h) => ({ x: h.step, y: h[name] })),
      borderColor: colors[i % colors.length], pointRadius: 3,
    }));
    metricChart.update();

    const list = document.getElementById("events");
    list.replaceChildren(...events.filter((e) => e.type !== "progress").map((e) => {
      const item = document.createElement("li");
      item.textContent = e.time.slice(11, 19) + "  " + e.message;
      item.className = e.type;
      return item;
    }));
    if (job.status === "succeeded" && !reportShown) {
      reportShown = await showReport(jobId);
      document.getElementById("try").hidden = false;
    }
    if (["succeeded", "failed", "cancelled"].includes(job.status)) clearInterval(timer);
  };
  let reportShown = false;
  await refresh();
  timer = setInterval(refresh, 2000);
}

function tableOf(table, header, rows) {
  table.replaceChildren();
  const head = table.createTHead().insertRow();
  for (const name of header) {
    const th = document.createElement("th");
    th.textContent = name;
    head.append(th);
  }
  const body = table.createTBody();
  for (const values of rows) {
    const row = body.insertRow();
    for (const value of values) cell(row, typeof value === "number" && !Number.isInteger(value) ? value.toFixed(3) : String(value ?? ""));
  }
  return body;
}

// The report of a succeeded job: scores beside the baseline, a confusion-matrix heat map (cell
// shade = share of the true label's rows), per-class scores and, for two classes, thresholds.
async function showReport(jobId) {
  let report;
  try {
    report = await json(`/v1/jobs/${jobId}/report`);
  } catch (e) {
    return false;
  }
  document.getElementById("report").hidden = false;
  document.getElementById("report-rows").textContent = report.rows;
  document.getElementById("report-warnings").replaceChildren(...report.warnings.map((w) => {
    const item = document.createElement("li");
    item.textContent = w;
    return item;
  }));
  tableOf(document.getElementById("report-scores"), ["metric", "model", "baseline"],
    Object.entries(report.metrics).map(([name, value]) => [name, value, report.baseline[name]]));
  document.getElementById("confusion-box").hidden = report.task !== "classification";
  if (report.task === "classification") {
    const body = tableOf(document.getElementById("confusion"), ["true \\ predicted", ...report.labels],
      report.confusion_matrix.map((counts, i) => [report.labels[i], ...counts]));
    [...body.rows].forEach((row, i) => {
      const total = report.confusion_matrix[i].reduce((a, b) => a + b, 0) || 1;
      [...row.cells].slice(1).forEach((td, j) => {
        const share = report.confusion_matrix[i][j] / total;
        td.style.background = `rgba(52, 101, 164, ${share.toFixed(3)})`;
        td.style.color = share > 0.5 ? "white" : "";
        td.title = `${(100 * share).toFixed(1)}% of '${report.labels[i]}' rows`;
      });
    });
  }
  if (report.per_class.length) {  // per class, per label (multi-label) or per entity type
    const name = report.task === "token_classification" ? "entity" : "label";
    const cut = report.label_thresholds;  // multi-label: each label's own threshold
    tableOf(document.getElementById("per-class"),
      [name, "precision", "recall", "f1", "support", ...(cut ? ["threshold"] : [])],
      report.per_class.map((c) => [c.label, c.precision, c.recall, c.f1, c.support,
        ...(cut ? [cut[c.label]] : [])]));
  }
  if (report.threshold != null) {
    const note = document.createElement("li");
    note.textContent = report.label_thresholds
      ? `decision thresholds per label (chosen on validation, used by predictions; shared ${report.threshold})`
      : `decision threshold ${report.threshold} (chosen on validation, used by predictions)`;
    document.getElementById("report-warnings").prepend(note);
  }
  const binary = document.getElementById("binary");
  binary.replaceChildren();
  if (report.binary) {
    const b = report.binary;
    const title = document.createElement("h4");
    title.textContent = `Positive class '${b.positive_label}'` +
      (b.roc_auc != null ? ` · ROC AUC ${b.roc_auc.toFixed(3)} · PR AUC ${b.pr_auc.toFixed(3)}` : "");
    const table = document.createElement("table");
    table.id = "thresholds";
    tableOf(table, ["threshold", "precision", "recall", "f1", "accuracy", "predicted positive"],
      b.thresholds.map((t) => [t.threshold.toFixed(1), t.precision, t.recall, t.f1, t.accuracy, t.predicted_positive]));
    binary.append(title, table);
  }
  return true;
}

// -- one sweep: its trials side by side ------------------------------------------------------------

async function showSweep(sweepId) {
  app.replaceChildren(document.getElementById("sweep-view").content.cloneNode(true));
  const chart = lineChart(document.getElementById("sweep-chart"), "trials compared");
  document.getElementById("sweep-cancel").addEventListener("click", async () => {
    await json(`/v1/sweeps/${sweepId}/cancel`, { method: "POST" }).catch(() => {});
  });
  const histories = {};  // job id -> evaluations, kept once the trial ended
  const refresh = async () => {
    const sweep = await json(`/v1/sweeps/${sweepId}`);
    document.getElementById("sweep-title").textContent = `Sweep ${sweep.id}`;
    const status = document.getElementById("sweep-status");
    status.textContent = sweep.status;
    status.className = "status " + sweep.status;
    document.getElementById("sweep-metric").textContent = sweep.metric;
    const best = sweep.best_trial;
    document.getElementById("sweep-summary").textContent =
      `${sweep.method} search over ${Object.keys(sweep.search).join(", ")} · ` +
      `${sweep.trials.length}/${sweep.max_trials} trials, ${sweep.max_concurrent} at once · ` +
      (best ? `best: trial ${best.number}, ${sweep.metric} ${best.value.toFixed(4)}` : "no trial finished yet");
    document.getElementById("sweep-error").textContent = sweep.error ? sweep.error.message : "";
    document.getElementById("sweep-cancel").disabled = !["running", "cancelling"].includes(sweep.status);
    const names = Object.keys(sweep.search);
    tableOf(document.getElementById("trials"), ["trial", ...names, sweep.metric, "status", "job"],
      sweep.trials.map((t) => [
        t.number + (best && t.number === best.number ? " ★" : ""),
        ...names.map((n) => String(t.params[n])),
        t.value === null ? "" : t.value,
        t.pruned ? "pruned" : t.status + (t.error ? `: ${t.error.message.slice(0, 60)}` : ""),
        t.job_id,
      ]));
    for (const t of sweep.trials) {
      if (histories[t.job_id] && histories[t.job_id].done) continue;
      const job = await json(`/v1/jobs/${t.job_id}`);
      histories[t.job_id] = { done: ["succeeded", "failed", "cancelled"].includes(job.status), job, trial: t };
    }
    chart.data.datasets = sweep.trials.map((t) => ({
      label: `trial ${t.number}: ` + names.map((n) => `${n} ${t.params[n]}`).join(", "),
      data: (histories[t.job_id] ? histories[t.job_id].job.history : [])
        .filter((e) => typeof e[sweep.metric] === "number")
        .map((e) => ({ x: e.epoch, y: e[sweep.metric] })),
      borderWidth: best && t.number === best.number ? 3 : 1,
    }));
    chart.options.scales.x.title.text = "epoch";
    chart.update();
  };
  await refresh().catch((e) => { document.getElementById("sweep-error").textContent = e.message; });
  timer = setInterval(() => refresh().catch(() => {}), 3000);
}

// -- routing ------------------------------------------------------------------------------------

function route() {
  clearInterval(timer);
  charts.forEach((chart) => chart.destroy());
  charts = [];
  const match = location.hash.match(/^#\/jobs\/(job_[0-9a-f]{32})$/);
  const sweep = location.hash.match(/^#\/sweeps\/(sweep_[0-9a-f]{32})$/);
  if (match) showJob(match[1]); else if (sweep) showSweep(sweep[1]); else showList();
}

document.getElementById("api-key").value = key();
document.getElementById("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  localStorage.setItem("finetune-api-key", document.getElementById("api-key").value.trim());
  route();
});
window.addEventListener("hashchange", route);
route();
