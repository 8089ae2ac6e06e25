// The dashboard's build (scripts/build-web.sh runs it; src/web/ embeds the output) and its
// development server, which proxies the API to a running `drover serve`.
import { defineConfig } from "vite";

declare const process: { env: Record<string, string | undefined> };

const target = process.env.DROVER_HTTP || "http://127.0.0.1:7071";
const token = process.env.DROVER_TOKEN;
const headers: Record<string, string> = token ? { Authorization: `Bearer ${token}` } : {};

export default defineConfig({
  base: "/",
  build: {
    target: "es2022",
    sourcemap: false,
    chunkSizeWarningLimit: 400,
  },
  server: {
    proxy: {
      "/v1": { target, headers, changeOrigin: true },
      "/metrics": { target, headers, changeOrigin: true },
    },
  },
});
