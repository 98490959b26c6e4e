/*
 * medseg case viewer: the controls around a NiiVue canvas (NiiVue does all the drawing).
 *
 * Reads the case from the <script id="medseg-data" type="application/json"> element of the page:
 *   {caseId, image: base64 .nii.gz, labels: base64 .nii.gz,
 *    labelTable: [{value, name, colour: [r, g, b]}], opacity, centreMm: [x, y, z] (RAS) or null}
 * and needs the NiiVue UMD bundle (window.niivue) loaded before this file. Works from file://
 * (classic scripts, data in the page) and over http. When the first frame is drawn it sets
 * window.medsegViewer.ready = true and document.body.dataset.viewer = "ready", and tells a parent
 * page (the batch report) with postMessage({medsegViewer: "ready", caseId}).
 */
(function () {
  "use strict";

  var VIEWS = [
    ["Axial", "sliceTypeAxial"], ["Coronal", "sliceTypeCoronal"], ["Sagittal", "sliceTypeSagittal"],
    ["All", "sliceTypeMultiplanar"], ["3D", "sliceTypeRender"]
  ];

  function element(tag, attributes, text) {
    var node = document.createElement(tag);
    Object.keys(attributes || {}).forEach(function (key) { node.setAttribute(key, attributes[key]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fail(message) {
    var box = document.getElementById("medseg-status");
    if (box) { box.textContent = message; box.className = "error"; }
    document.body.dataset.viewer = "error";
    window.medsegViewer = { ready: false, error: message };
  }

  /* NiiVue's label colour map: index 0 (background) is transparent, hidden labels too. */
  function colourMap(table, hidden) {
    var map = { R: [0], G: [0], B: [0], A: [0], I: [0], labels: ["background"] };
    table.forEach(function (row) {
      map.R.push(row.colour[0]); map.G.push(row.colour[1]); map.B.push(row.colour[2]);
      map.A.push(hidden[row.value] ? 0 : 255); map.I.push(row.value); map.labels.push(row.name);
    });
    return map;
  }

  function labelName(table, value) {
    for (var i = 0; i < table.length; i++) if (table[i].value === value) return table[i].name;
    return value === 0 ? "background" : "label " + value;
  }

  function Viewer(data, root) {
    this.data = data;
    this.hidden = {};
    this.root = root;
    this.nv = null;
  }

  Viewer.prototype.build = function () {
    var self = this, data = this.data;
    var bar = element("div", { "class": "toolbar" });
    bar.appendChild(element("strong", { "class": "case" }, data.caseId));
    VIEWS.forEach(function (view) {
      var button = element("button", { type: "button", "data-view": view[1] }, view[0]);
      button.addEventListener("click", function () { self.setView(view[1]); });
      bar.appendChild(button);
    });
    var opacityLabel = element("label", { "class": "opacity" }, "labels ");
    var slider = element("input", { type: "range", min: "0", max: "1", step: "0.05", value: String(data.opacity) });
    slider.addEventListener("input", function () { self.setOpacity(parseFloat(slider.value)); });
    opacityLabel.appendChild(slider);
    bar.appendChild(opacityLabel);
    this.root.appendChild(bar);

    var legend = element("div", { "class": "legend" });
    if (!data.labelTable.length) legend.appendChild(element("span", { "class": "empty" }, "no labels in this case"));
    data.labelTable.forEach(function (row) {
      var item = element("label", { "class": "label" });
      var box = element("input", { type: "checkbox", "data-label": String(row.value) });
      box.checked = true;
      box.addEventListener("change", function () { self.setVisible(row.value, box.checked); });
      var swatch = element("span", { "class": "swatch" });
      swatch.style.background = "rgb(" + row.colour.join(",") + ")";
      item.appendChild(box); item.appendChild(swatch);
      item.appendChild(document.createTextNode(row.value + " " + row.name));
      legend.appendChild(item);
    });
    this.root.appendChild(legend);

    var holder = element("div", { "class": "canvas" });
    this.canvas = element("canvas", { id: "medseg-canvas" });
    holder.appendChild(this.canvas);
    this.root.appendChild(holder);
    this.readout = element("div", { id: "medseg-readout", "class": "readout" }, "click or hover for voxel values");
    this.root.appendChild(this.readout);
    this.root.appendChild(element("div", { "class": "help" },
      "scroll: slice · click/drag: crosshair · right-drag: contrast · 3D: drag to rotate"));
  };

  Viewer.prototype.start = async function () {
    var data = this.data, N = window.niivue;
    this.nv = new N.Niivue({
      backColor: [0, 0, 0, 1], show3Dcrosshair: true, dragAndDropEnabled: false, logLevel: "error",
      crosshairColor: [1, 1, 1, 0.6], isNearestInterpolation: true,
      multiplanarShowRender: N.SHOW_RENDER.ALWAYS, isColorbar: false, loadingText: "loading " + data.caseId
    });
    await this.nv.attachToCanvas(this.canvas);
    var image = await N.NVImage.loadFromBase64({ base64: data.image, name: data.caseId + ".nii.gz" });
    this.nv.addVolume(image);
    var labels = await N.NVImage.loadFromBase64({ base64: data.labels, name: data.caseId + "_labels.nii.gz" });
    labels.setColormapLabel(colourMap(data.labelTable, this.hidden));
    this.nv.addVolume(labels);
    this.nv.setOpacity(1, data.opacity);
    this.nv.setInterpolation(true);
    var self = this;
    this.nv.onLocationChange = function (location) { self.show(location.frac, "crosshair"); };
    this.canvas.addEventListener("mousemove", function (event) { self.hover(event); });
    if (data.centreMm) this.nv.scene.crosshairPos = this.nv.mm2frac(data.centreMm, 0, true);
    this.setView("sliceTypeMultiplanar");
  };

  Viewer.prototype.setView = function (name) {
    this.nv.setSliceType(this.nv[name]);
    Array.prototype.forEach.call(this.root.querySelectorAll("button[data-view]"), function (button) {
      button.classList.toggle("active", button.getAttribute("data-view") === name);
    });
  };

  Viewer.prototype.setOpacity = function (value) {
    this.nv.setOpacity(1, value);
  };

  Viewer.prototype.setVisible = function (value, visible) {
    this.hidden[value] = !visible;
    this.nv.volumes[1].setColormapLabel(colourMap(this.data.labelTable, this.hidden));
    this.nv.updateGLVolume();
  };

  /* NiiVue indexes voxels of the volume turned to RAS axes; the file's own (i, j, k) undo that turn. */
  function fileVoxel(volume, ras) {
    var out = [0, 0, 0];
    for (var d = 0; d < 3; d++) {
      var p = volume.permRAS[d], axis = Math.abs(p) - 1;
      out[axis] = p < 0 ? volume.hdr.dims[axis + 1] - 1 - ras[d] : ras[d];
    }
    return out;
  }

  /* File voxel index, image value and label at fractional volume coordinates. */
  Viewer.prototype.valuesAt = function (frac) {
    var mm = this.nv.frac2mm(frac, 0, true);
    var image = this.nv.volumes[0], labels = this.nv.volumes[1];
    var vox = labels.mm2vox([mm[0], mm[1], mm[2]]);
    var ivox = image.mm2vox([mm[0], mm[1], mm[2]]);
    var label = Math.round(labels.getValue(vox[0], vox[1], vox[2]));
    return { vox: fileVoxel(labels, vox), value: image.getValue(ivox[0], ivox[1], ivox[2]), label: label };
  };

  Viewer.prototype.show = function (frac, how) {
    if (!frac || frac[0] < 0 || frac[1] < 0 || frac[2] < 0 || frac[0] > 1 || frac[1] > 1 || frac[2] > 1) return;
    var v = this.valuesAt(frac);
    var value = Number.isInteger(v.value) ? v.value : Number(v.value).toPrecision(5);
    this.readout.textContent = how + ": voxel (" + v.vox.join(", ") + ")  value " + value + "  label " + v.label +
      " " + labelName(this.data.labelTable, v.label);
  };

  Viewer.prototype.hover = function (event) {
    var rect = this.canvas.getBoundingClientRect(), dpr = this.nv.uiData.dpr || 1;
    var frac = this.nv.canvasPos2frac([(event.clientX - rect.left) * dpr, (event.clientY - rect.top) * dpr]);
    this.show(frac, "cursor");
  };

  function signalReady(viewer) {
    window.medsegViewer = { ready: true, nv: viewer.nv, viewer: viewer, caseId: viewer.data.caseId };
    document.body.dataset.viewer = "ready";
    if (window.parent && window.parent !== window) {
      window.parent.postMessage({ medsegViewer: "ready", caseId: viewer.data.caseId }, "*");
    }
  }

  async function main() {
    var root = document.getElementById("medseg-viewer");
    var source = document.getElementById("medseg-data");
    if (!window.niivue) {
      fail("The NiiVue bundle (viewer_assets/niivue.umd.js) is missing beside this page; copy the whole output folder.");
      return;
    }
    var viewer = new Viewer(JSON.parse(source.textContent), root);
    viewer.build();
    try {
      await viewer.start();
    } catch (error) {
      fail("NiiVue could not show this case: " + error);
      return;
    }
    document.getElementById("medseg-status").textContent = "";
    requestAnimationFrame(function () { requestAnimationFrame(function () { signalReady(viewer); }); });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", main);
  else main();
})();
