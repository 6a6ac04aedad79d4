(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const list = document.getElementById("prompt-list");
  const filter = document.getElementById("filter");
  const order = document.getElementById("order");
  const prev = document.getElementById("prev");
  const next = document.getElementById("next");
  const info = document.getElementById("page-info");
  const BEST_SIDE = 112, ROUND_SIDE = 72;
  let page = 0;

  function fmt(x) {
    if (x === null || x === undefined) return "—";
    return x === 0 || (Math.abs(x) >= 0.01 && Math.abs(x) < 1e4) ? x.toFixed(2) : x.toPrecision(3);
  }
  function bestScore(row) { return row.tiles[row.best][2]; }
  function spread(p) {
    const s = p.runs.map(bestScore);
    return s.length > 1 ? Math.max.apply(null, s) - Math.min.apply(null, s) : -Infinity;
  }
  function lowest(p) { return p.runs.length ? Math.min.apply(null, p.runs.map(bestScore)) : Infinity; }

  function selected() {
    const q = filter.value.trim().toLowerCase();
    let ps = data.prompts.filter(function (p) {
      return !q || p.text.toLowerCase().indexOf(q) >= 0 || p.tags.toLowerCase().indexOf(q) >= 0;
    });
    if (order.value === "spread") ps = ps.slice().sort(function (a, b) { return spread(b) - spread(a); });
    if (order.value === "low") ps = ps.slice().sort(function (a, b) { return lowest(a) - lowest(b); });
    return ps;
  }

  function tileTitle(tile, searched) {
    const lines = ["round " + tile[0] + " · seed " + tile[3]];
    tile[4].forEach(function (m) {
      const mark = m[0] === searched ? " (searched)" : "";
      lines.push(data.metrics[m[0]] + mark + ": " + fmt(m[1]) + (m[2] >= 0 ? " — " + data.strings[m[2]] : ""));
    });
    return lines.join("\n");
  }

  function tileEl(p, row, tile, side, caption, classes) {
    const fig = document.createElement("figure");
    fig.className = "tile " + classes;
    const img = document.createElement("img");
    img.loading = "lazy";
    img.decoding = "async";
    img.width = side;
    img.height = side;
    img.alt = "round " + tile[0] + " best";
    img.addEventListener("load", function () { if (img.naturalWidth < side) img.classList.add("px"); });
    img.addEventListener("error", function () { img.classList.add("missing"); img.alt = "image missing"; });
    img.src = row.pre + tile[1];
    fig.title = tileTitle(tile, data.runs[row.run].metric);
    const cap = document.createElement("figcaption");
    cap.textContent = caption;
    fig.appendChild(img);
    fig.appendChild(cap);
    return fig;
  }

  function videoEl(row, top) {
    // a video run's best candidate, played inline (muted, looped); its MP4 linked under it
    const fig = document.createElement("figure");
    fig.className = "tile best video";
    const v = document.createElement("video");
    v.src = row.video;
    v.controls = true;
    v.loop = true;
    v.muted = true;
    v.playsInline = true;
    v.preload = "metadata";
    v.width = 2 * BEST_SIDE;
    fig.title = tileTitle(top, data.runs[row.run].metric);
    const cap = document.createElement("figcaption");
    const link = document.createElement("a");
    link.href = row.video;
    link.textContent = "best video · " + fmt(top[2]);
    cap.appendChild(link);
    fig.appendChild(v);
    fig.appendChild(cap);
    return fig;
  }

  function promptEl(p) {
    const art = document.createElement("article");
    art.className = "prompt";
    const h = document.createElement("h3");
    h.textContent = "#" + (p.n + 1) + " · " + p.text;
    art.appendChild(h);
    if (p.tags) {
      const t = document.createElement("p");
      t.className = "tags";
      t.textContent = p.tags;
      art.appendChild(t);
    }
    p.runs.forEach(function (row) {
      const run = data.runs[row.run];
      const top = row.tiles[row.best];
      const line = document.createElement("div");
      line.className = "run-row";
      const label = document.createElement("div");
      label.className = "run-label";
      const chip = document.createElement("span");
      chip.className = "chip";
      chip.style.background = run.colour;
      label.appendChild(chip);
      label.appendChild(document.createTextNode(run.label));
      label.appendChild(document.createElement("br"));
      const score = document.createElement("b");
      score.textContent = data.metrics[run.metric] + " " + fmt(top[2]);
      label.appendChild(score);
      label.appendChild(document.createTextNode(" in round " + top[0] + " of " + row.tiles[row.tiles.length - 1][0]));
      line.appendChild(label);
      const tiles = document.createElement("div");
      tiles.className = "tiles";
      if (row.video) tiles.appendChild(videoEl(row, top));
      tiles.appendChild(tileEl(p, row, top, BEST_SIDE, "best · " + fmt(top[2]), "best run-best"));
      row.tiles.forEach(function (tile, i) {
        tiles.appendChild(tileEl(p, row, tile, ROUND_SIDE, "r" + tile[0] + " · " + fmt(tile[2]),
                                 i === row.best ? "best" : ""));
      });
      line.appendChild(tiles);
      art.appendChild(line);
      const why = top[4].filter(function (m) { return m[0] === run.metric && m[2] >= 0; })[0];
      if (why) {
        const w = document.createElement("p");
        w.className = "why";
        w.textContent = data.strings[why[2]];
        art.appendChild(w);
      }
    });
    return art;
  }

  function draw() {
    const ps = selected();
    const per = Math.max(1, data.perPage);
    const pages = Math.max(1, Math.ceil(ps.length / per));
    page = Math.min(Math.max(0, page), pages - 1);
    const shown = ps.slice(page * per, (page + 1) * per);
    const frag = document.createDocumentFragment();
    shown.forEach(function (p) { frag.appendChild(promptEl(p)); });
    list.replaceChildren(frag);
    info.textContent = ps.length
      ? "prompts " + (page * per + 1) + "–" + (page * per + shown.length) + " of " + ps.length +
        " · page " + (page + 1) + " of " + pages
      : "no prompt matches";
    prev.disabled = page === 0;
    next.disabled = page >= pages - 1;
  }

  function turn(by) {
    page += by;
    draw();
    document.getElementById("prompts").scrollIntoView();
  }
  filter.addEventListener("input", function () { page = 0; draw(); });
  order.addEventListener("change", function () { page = 0; draw(); });
  prev.addEventListener("click", function () { turn(-1); });
  next.addEventListener("click", function () { turn(1); });
  draw();
})();
