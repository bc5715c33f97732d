// The EVE web page: pick or drop an image, ask, and read the answer as it streams in.
// Talks to the same server's OpenAI-compatible endpoint with fetch + ReadableStream (no build step).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, messages: [], image: null, controller: null };

async function loadModel() {
  try {
    const response = await fetch("/v1/models");
    const body = await response.json();
    state.model = body.data[0].id;
    $("model").textContent = state.model;
  } catch (error) {
    $("model").textContent = "cannot reach the server";
  }
}

function setImage(file) {
  if (!file || !file.type.startsWith("image/")) {
    $("status").textContent = "that is not an image";
    return;
  }
  const reader = new FileReader();
  reader.onload = () => {
    state.image = reader.result; // a data: URL with base64, as the API takes it
    $("preview").src = state.image;
    $("preview").hidden = false;
    $("drop-hint").textContent = file.name;
  };
  reader.readAsDataURL(file);
}

function addTurn(role, text, image) {
  const turn = document.createElement("div");
  turn.className = `turn ${role}`;
  if (image) {
    const img = document.createElement("img");
    img.src = image;
    turn.appendChild(img);
  }
  const span = document.createElement("span");
  span.className = "text";
  span.textContent = text;
  turn.appendChild(span);
  $("conversation").appendChild(turn);
  return span;
}

// Parse server-sent events from the response body; call onData with each JSON payload.
async function readEvents(response, onData) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        onData(JSON.parse(data));
      }
    }
  }
}

async function ask(event) {
  event.preventDefault();
  const question = $("question").value.trim();
  if (!question || state.controller) return;
  const content = [];
  if (state.image) content.push({ type: "image_url", image_url: { url: state.image } });
  content.push({ type: "text", text: question });
  addTurn("user", question, state.image);
  const answer = addTurn("assistant", "");
  const userMessage = { role: "user", content };
  const request = {
    model: state.model,
    messages: [...state.messages, userMessage],
    stream: true,
    max_tokens: Number($("max-tokens").value) || 256,
    temperature: Number($("temperature").value) || 0,
  };
  state.controller = new AbortController();
  setBusy(true);
  $("status").textContent = "thinking…";
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(request),
      signal: state.controller.signal,
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(body.error ? body.error.message : `HTTP ${response.status}`);
    }
    let finish = null;
    await readEvents(response, (chunk) => {
      if (chunk.error) throw new Error(chunk.error.message);
      const choice = chunk.choices && chunk.choices[0];
      if (!choice) return;
      if (choice.delta && choice.delta.content) answer.textContent += choice.delta.content;
      if (choice.finish_reason) finish = choice.finish_reason;
    });
    $("status").textContent = finish ? `done (${finish})` : "done";
    if (answer.textContent.trim()) {
      state.messages.push(userMessage, { role: "assistant", content: answer.textContent.trim() });
      state.image = null; // sent: the next question refers to the conversation so far
      $("image-input").value = ""; // so picking the same file again is a change
      $("preview").hidden = true;
      $("drop-hint").textContent = "Drop an image here, or click to pick one";
    }
    $("question").value = "";
  } catch (error) {
    if (error.name === "AbortError") {
      $("status").textContent = "stopped";
    } else {
      answer.parentElement.classList.add("error");
      answer.textContent = error.message;
      $("status").textContent = "error";
    }
  } finally {
    state.controller = null;
    setBusy(false);
  }
}

function setBusy(busy) {
  $("ask").disabled = busy;
  $("stop").disabled = !busy;
}

function reset() {
  if (state.controller) state.controller.abort();
  state.messages = [];
  $("conversation").replaceChildren();
  $("status").textContent = "";
}

function setUp() {
  const zone = $("drop-zone");
  $("image-input").addEventListener("change", (e) => setImage(e.target.files[0]));
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("dragging"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("dragging");
    setImage(e.dataTransfer.files[0]);
  });
  $("ask-form").addEventListener("submit", ask);
  $("question").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("ask-form").requestSubmit(); }
  });
  $("stop").addEventListener("click", () => state.controller && state.controller.abort());
  $("reset").addEventListener("click", reset);
  loadModel();
}

setUp();
