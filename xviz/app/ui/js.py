"""The page's few scripts: they turn clicks and keys on the HTML maps into Gradio events.

Each is the ``js_on_load`` of one ``gr.HTML``: ``element`` is its root and ``trigger(name,
data)`` fires its event, whose handler reads ``data`` from ``gr.EventData``. Listeners sit on
the root, so they keep working when the component's HTML is replaced.
"""

import json

from xviz.app.live import CAMERA_PROBLEMS, FRAME_KEY

# A channel grid: a tile's button reports its channel (Enter and Space click a button too).
TILE_CLICKS = """
element.addEventListener('click', (event) => {
  const tile = event.target.closest('[data-channel]');
  if (tile) trigger('click', {channel: Number(tile.dataset.channel)});
});
"""

# The Grad-CAM strip: a block's button reports its block and is outlined at once (the server
# outlines it too when it draws the strip again).
STRIP_CLICKS = """
element.addEventListener('click', (event) => {
  const cam = event.target.closest('[data-block]');
  if (!cam) return;
  element.querySelectorAll('[data-block]').forEach((b) => {
    b.classList.toggle('xviz-selected', b === cam);
    b.setAttribute('aria-pressed', String(b === cam));
  });
  trigger('click', {block: cam.dataset.block});
});
"""

# The network map: a block reports its name on click, Enter or Space.
BLOCK_CLICKS = """
const pick = (event) => {
  const block = event.target.closest('[data-block]');
  if (block) { event.preventDefault(); trigger('click', {block: block.dataset.block}); }
};
element.addEventListener('click', pick);
element.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' || event.key === ' ') pick(event);
});
"""

# The enlarged channel: a click reports the map position (y, x) under it; by keyboard, the
# arrow keys move a cursor over the map's cells and Enter reports the cell.
POSITION_CLICKS = """
const cell = (box, y, x) => {
  const h = Number(box.dataset.h), w = Number(box.dataset.w);
  return [Math.min(h - 1, Math.max(0, y)), Math.min(w - 1, Math.max(0, x))];
};
element.addEventListener('click', (event) => {
  const box = event.target.closest('.xviz-channel-box');
  if (!box) return;
  const r = box.querySelector('img').getBoundingClientRect();
  const [y, x] = cell(box,
    Math.floor((event.clientY - r.top) / r.height * Number(box.dataset.h)),
    Math.floor((event.clientX - r.left) / r.width * Number(box.dataset.w)));
  trigger('click', {y, x});
});
element.addEventListener('keydown', (event) => {
  const box = event.target.closest('.xviz-channel-box');
  if (!box) return;
  const h = Number(box.dataset.h), w = Number(box.dataset.w);
  let y = Number(box.dataset.cy ?? Math.floor(h / 2));
  let x = Number(box.dataset.cx ?? Math.floor(w / 2));
  const moves = {ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1]};
  if (event.key in moves) {
    [y, x] = cell(box, y + moves[event.key][0], x + moves[event.key][1]);
    box.dataset.cy = y;
    box.dataset.cx = x;
    let cursor = box.querySelector('.xviz-cursor');
    if (!cursor) {
      cursor = document.createElement('span');
      cursor.className = 'xviz-cursor';
      box.appendChild(cursor);
    }
    Object.assign(cursor.style, {top: `${100 * y / h}%`, left: `${100 * x / w}%`,
      width: `${100 / w}%`, height: `${100 / h}%`});
  } else if (event.key === 'Enter' || event.key === ' ') {
    trigger('click', {y, x});
  } else {
    return;
  }
  event.preventDefault();
});
"""

# Plotly charts whose bars stand for channels (``customdata``): a click on a bar reports the
# chart's element id and the bar's channel. gr.Plot has no click event, so this bridge (an
# empty gr.HTML) watches the page for such charts and listens to plotly.js's own event.
PLOT_CLICKS = """
const attach = () => {
  document.querySelectorAll('.xviz-clickable-plot .js-plotly-plot').forEach((plot) => {
    if (plot.xvizClicks || typeof plot.on !== 'function') return;
    plot.xvizClicks = true;
    plot.on('plotly_click', (data) => {
      const point = data && data.points && data.points[0];
      if (!point || point.customdata === undefined || point.customdata === null) return;
      const chart = plot.closest('.xviz-clickable-plot');
      trigger('click', {chart: chart.id, channel: Number(point.customdata)});
    });
  });
};
let queued = false;
new MutationObserver(() => {
  if (!queued) { queued = true; requestAnimationFrame(() => { queued = false; attach(); }); }
}).observe(document.body, {childList: true, subtree: true});
attach();
"""

# The share link: the server gives the query of the view; the page adds its own address,
# copies the whole link to the clipboard and shows it.
COPY_LINK = """
(query) => {
  if (!query) return query;
  const url = window.location.origin + window.location.pathname + query;
  if (navigator.clipboard) navigator.clipboard.writeText(url).catch(() => {});
  return url;
}
"""

# The Live tab's grids: a tile reports its channel and its map (depthwise or pointwise).
LIVE_CLICKS = """
element.addEventListener('click', (event) => {
  const tile = event.target.closest('[data-channel]');
  if (!tile) return;
  const side = tile.closest('#live-depthwise') ? 'depthwise' : 'pointwise';
  trigger('click', {channel: Number(tile.dataset.channel), side});
});
"""

# The page's meter of its own frame rate and delay: the webcam captures each frame as a JPEG
# ``data:`` URL (canvas.toDataURL), whose capture time is kept by the URL's last characters;
# the server names that frame in ``data-frame`` of its answer; once the answer's pictures are
# decoded and painted, the meter records when, and how long after its capture, it showed.
# ``window.xvizLive`` keeps the last 600 frames shown, for bench/live.py.
LIVE_METER = """
const proto = HTMLCanvasElement.prototype;
const captured = window.xvizCaptures = window.xvizCaptures || new Map();
if (!proto.xvizToDataURL) {
  proto.xvizToDataURL = proto.toDataURL;
  proto.toDataURL = function (type, ...rest) {
    const at = performance.now();
    const url = this.xvizToDataURL(type, ...rest);
    if (type === 'image/jpeg') {
      captured.set(url.slice(-KEY), at);
      while (captured.size > 200) captured.delete(captured.keys().next().value);
    }
    return url;
  };
}
const log = window.xvizLive = window.xvizLive || [];
let seen = null;
let text = '';
const write = () => {
  const meter = element.querySelector('.xviz-live-meter');
  if (meter && meter.textContent !== text) meter.textContent = text;
};
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : null;
};
const update = () => {
  write();
  const view = element.querySelector('.xviz-live[data-frame]');
  if (!view || view.dataset.frame === seen) return;
  const frame = seen = view.dataset.frame;
  const pictures = [...view.querySelectorAll('img')].map((i) => i.decode().catch(() => {}));
  Promise.all(pictures).then(() => requestAnimationFrame(() => {
    const shown = performance.now();
    const at = captured.get(frame);
    log.push({frame, shown, delay: at === undefined ? null : (shown - at) / 1000});
    if (log.length > 600) log.splice(0, log.length - 600);
    const recent = log.filter((e) => shown - e.shown <= 3000);
    const span = (shown - recent[0].shown) / 1000;
    const fps = recent.length > 1 && span > 0 ? (recent.length - 1) / span : 0;
    const delay = median(recent.map((e) => e.delay).filter((d) => d !== null));
    text = `On this screen: ${fps.toFixed(1)} frames/s` + (delay === null ? '' :
      `, ${delay.toFixed(2)} s from a frame's capture to its maps`) + ' (last 3 s).';
    write();
  }));
};
new MutationObserver(update).observe(element, {childList: true, subtree: true});
""".replace("KEY", str(FRAME_KEY))

# A camera refused or missing: Gradio's webcam leaves its box empty and says nothing (its
# getUserMedia promise's rejection goes uncaught), so the view says why in one sentence
# (``CAMERA_PROBLEMS``); the stream's first frame replaces it once a camera is given.
CAMERA_PROBLEM = """
const problems = PROBLEMS;
const say = (name) => {
  const text = document.createElement('p');
  text.className = 'xviz-live-message';
  text.setAttribute('role', 'alert');
  text.textContent = problems[name] || problems.NotFoundError;
  element.querySelector('.xviz-live')?.replaceChildren(text);
};
const media = navigator.mediaDevices;
if (!media || !media.getUserMedia) {
  say('insecure');
} else if (!media.xvizAsk) {
  media.xvizAsk = media.getUserMedia.bind(media);
  media.getUserMedia = (constraints) => media.xvizAsk(constraints).catch((error) => {
    say(error && error.name);
    throw error;
  });
}
""".replace("PROBLEMS", json.dumps(CAMERA_PROBLEMS))

# Stop ends Gradio's stream but leaves the camera on (its webcam stops its tracks only when the
# component goes), so the camera's light stays lit: Stop (and Freeze, which clicks it) releases
# the camera, and Record asks for it again, as it was, where it was released.
CAMERA_RELEASE = """
if (!window.xvizCameraRelease) {
  window.xvizCameraRelease = true;
  let asked = null;  // the constraints the released camera had
  document.addEventListener('click', async (event) => {
    const button = event.target.closest && event.target.closest('#live-camera .button-wrap button');
    const video = document.querySelector('#live-camera video');
    if (!button || !video) return;
    const label = button.innerText.trim();
    const tracks = video.srcObject ? video.srcObject.getTracks() : [];
    if (label === 'Stop') {
      asked = tracks.length ? tracks[0].getConstraints() : asked;
      setTimeout(() => tracks.forEach((t) => t.stop()), 0);  // after Gradio's own handler
    } else if (label === 'Record' && asked && tracks.every((t) => t.readyState === 'ended')) {
      const stream = await navigator.mediaDevices.getUserMedia({video: asked});
      video.srcObject = stream;
      await video.play().catch(() => {});
    }
  }, true);
}
"""

# Freeze names the frame on screen (the last the meter saw painted, else the one the view
# holds) and stops the camera as it opens that frame in the Activations tab: the stream would go
# on behind the other tabs otherwise.
FREEZE = """
(shown, ...args) => {
  const log = window.xvizLive || [];
  const view = document.querySelector('#live-view .xviz-live[data-frame]');
  const key = log.length ? log[log.length - 1].frame : (view ? view.dataset.frame : '');
  const stop = [...document.querySelectorAll('#live-camera .button-wrap button')]
    .find((b) => b.innerText.trim() === 'Stop');
  if (stop) stop.click();
  return [key, ...args];
}
"""
