// Loads the dashboard's wasm (served by walvault itself; nothing comes from elsewhere).
import init from "/walvault_web_ui.js";
init({ module_or_path: "/walvault_web_ui_bg.wasm" });
