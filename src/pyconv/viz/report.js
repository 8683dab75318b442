// The report page's explorer (pyconv/report.py puts DATA before this):
// DATA.input (H, W, C) the scaled input image; DATA.weights (KH, KW, C, F),
// DATA.bias (F), DATA.stride, DATA.pads [top, left], DATA.relu, and
// DATA.output (OH, OW, F), the first convolution's output as the network
// computed it. A click on the feature map recomputes one value from its
// window, in plain sight.
"use strict";
(function () {
  const X = DATA.input, K = DATA.weights, Y = DATA.output;
  const H = X.length, W = X[0].length, C = X[0][0].length;
  const KH = K.length, KW = K[0].length, F = K[0][0][0].length;
  const OH = Y.length, OW = Y[0].length;
  const [SH, SW] = DATA.stride, [PT, PL] = DATA.pads;
  const IN_PX = Math.max(4, Math.floor(280 / Math.max(H, W)));
  const OUT_PX = Math.max(4, Math.floor(280 / Math.max(OH, OW)));
  const select = document.getElementById("channel");
  const inputCanvas = document.getElementById("input");
  const mapCanvas = document.getElementById("fmap");
  let picked = [Math.floor(OH / 2), Math.floor(OW / 2)];

  for (let f = 0; f < F; f++) {
    const option = document.createElement("option");
    option.value = f;
    option.textContent = f;
    select.appendChild(option);
  }

  function range(get, rows, cols) {
    let lo = Infinity, hi = -Infinity;
    for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) {
      lo = Math.min(lo, get(i, j));
      hi = Math.max(hi, get(i, j));
    }
    return [lo, hi];
  }

  function grey(v, lo, hi) {
    const g = Math.round(255 * (hi > lo ? (v - lo) / (hi - lo) : 0));
    return `rgb(${g},${g},${g})`;
  }

  function drawGrid(canvas, px, rows, cols, get, box) {
    canvas.width = cols * px;
    canvas.height = rows * px;
    const ctx = canvas.getContext("2d");
    const [lo, hi] = range(get, rows, cols);
    for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) {
      ctx.fillStyle = grey(get(i, j), lo, hi);
      ctx.fillRect(j * px, i * px, px, px);
    }
    if (box) {
      ctx.strokeStyle = "red";
      ctx.lineWidth = 2;
      ctx.strokeRect(box[1] * px, box[0] * px, box[3] * px, box[2] * px);
    }
  }

  function mean(i, j) {
    let s = 0;
    for (let c = 0; c < C; c++) s += X[i][j][c];
    return s / C;
  }

  function table(id, caption, values, colour) {
    const t = document.createElement("table");
    t.className = "grid";
    t.id = id;
    t.createCaption().textContent = caption;
    const scale = Math.max(1e-12, ...values.flat().map(Math.abs));
    for (const row of values) {
      const tr = t.insertRow();
      for (const v of row) {
        const td = tr.insertCell();
        td.textContent = v.toFixed(3);
        td.dataset.value = v;
        const a = Math.min(1, Math.abs(v) / scale);
        td.style.background = colour && v < 0 ? `rgba(33,102,172,${a})`
          : `rgba(${colour ? "178,24,43" : "120,120,120"},${a * (colour ? 1 : 0.5)})`;
      }
    }
    return t;
  }

  function explain() {
    const [i, j] = picked, f = +select.value;
    const top = i * SH - PT, left = j * SW - PL;
    const detail = document.getElementById("detail");
    detail.textContent = "";
    let sum = 0;
    for (let c = 0; c < C; c++) {
      const win = [], ker = [], prod = [];
      for (let a = 0; a < KH; a++) {
        win.push([]); ker.push([]); prod.push([]);
        for (let b = 0; b < KW; b++) {
          const r = top + a, s = left + b;
          const x = r >= 0 && r < H && s >= 0 && s < W ? X[r][s][c] : 0;
          win[a].push(x);
          ker[a].push(K[a][b][c][f]);
          prod[a].push(x * K[a][b][c][f]);
          sum += x * K[a][b][c][f];
        }
      }
      const ch = C > 1 ? ` (channel ${c})` : "";
      detail.appendChild(table(`window-${c}`, `input window${ch}`, win, false));
      detail.appendChild(table(`kernel-${c}`, `kernel ${f}${ch}`, ker, true));
      detail.appendChild(table(`product-${c}`, `products${ch}`, prod, true));
    }
    const bias = DATA.bias[f], pre = sum + bias, out = DATA.relu ? Math.max(0, pre) : pre;
    const value = document.getElementById("value");
    value.textContent = `position (${i}, ${j}) of kernel ${f}: the window's top-left ` +
      `pixel is (${top}, ${left}); the sum of the ${KH * KW * C} products ` +
      `${sum.toFixed(4)} + bias ${bias.toFixed(4)} = ${pre.toFixed(4)}` +
      (DATA.relu ? `, after ReLU ${out.toFixed(4)}` : "") +
      `; the network computed ${Y[i][j][f].toFixed(4)}.`;
    Object.assign(value.dataset, {row: i, col: j, kernel: f, top: top, left: left,
                                  computed: out, network: Y[i][j][f]});
    drawGrid(inputCanvas, IN_PX, H, W, mean, [top, left, KH, KW]);
    drawGrid(mapCanvas, OUT_PX, OH, OW, (a, b) => Y[a][b][f], [i, j, 1, 1]);
  }

  mapCanvas.addEventListener("click", (event) => {
    const r = mapCanvas.getBoundingClientRect();
    const i = Math.floor((event.clientY - r.top) * OH / r.height);
    const j = Math.floor((event.clientX - r.left) * OW / r.width);
    picked = [Math.min(Math.max(i, 0), OH - 1), Math.min(Math.max(j, 0), OW - 1)];
    explain();
  });
  select.addEventListener("change", explain);
  explain();
})();
