// A small rolling line chart on a <canvas>: no library, fixed number of points.
export class LineChart {
  constructor(canvas, { series, points = 120, min = 0 }) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.series = series;           // [{name, color}]
    this.points = points;
    this.min = min;
    this.data = series.map(() => []);
  }

  push(values) {
    values.forEach((v, i) => {
      const d = this.data[i];
      d.push(Number.isFinite(v) ? v : 0);
      if (d.length > this.points) d.shift();
    });
    this.draw();
  }

  draw() {
    const { ctx, canvas } = this;
    const w = canvas.width, h = canvas.height, pad = 28;
    ctx.clearRect(0, 0, w, h);
    const all = this.data.flat();
    const max = Math.max(1, ...all) * 1.15;
    ctx.strokeStyle = "#333a4d";
    ctx.fillStyle = "#8a93a8";
    ctx.font = "11px sans-serif";
    ctx.lineWidth = 1;
    for (let k = 0; k <= 4; k++) {
      const y = h - pad / 2 - (k / 4) * (h - pad);
      ctx.beginPath(); ctx.moveTo(pad, y); ctx.lineTo(w, y); ctx.stroke();
      ctx.fillText(String(Math.round((max * k) / 4)), 2, y + 4);
    }
    this.series.forEach((s, i) => {
      const d = this.data[i];
      if (d.length < 2) return;
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 2;
      ctx.beginPath();
      d.forEach((v, j) => {
        const x = pad + ((w - pad) * j) / (this.points - 1);
        const y = h - pad / 2 - (v / max) * (h - pad);
        if (j === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
      });
      ctx.stroke();
      ctx.fillStyle = s.color;
      ctx.fillText(`${s.name} ${d[d.length - 1].toFixed(1)}`, pad + 6 + i * 110, 12);
    });
  }
}
