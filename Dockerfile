# syntax=docker/dockerfile:1
# Build stage: full install (TypeScript), compile to dist/
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
# Only the product: the demo, the simulator and the benchmark stay out of the image.
COPY src ./src
RUN npm ci --no-audit --no-fund

# Final stage: production dependencies only, the compiled code, a non-root user.
FROM node:24-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` compiles TypeScript, which the build stage has done.
RUN npm ci --omit=dev --no-audit --no-fund --ignore-scripts
COPY --from=build /app/dist/src ./dist/src
COPY config ./config
RUN mkdir -p /app/data && chown -R node:node /app/data
# The image's `node` user, by number: Kubernetes' runAsNonRoot can verify a number, not a name.
USER 1000:1000
# Loopback on purpose: as a sidecar the app shares the pod's loopback; anything wider hands
# the Keap account to whoever can reach the port. Standalone: -e HOST=0.0.0.0 plus PROXY_CLIENT_KEYS.
ENV HOST=127.0.0.1 PORT=8080 TOKEN_STORE=/app/data/tokens.json
VOLUME ["/app/data"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD node -e "require('http').get('http://127.0.0.1:'+(process.env.PORT||8080)+'/healthz',r=>process.exit(r.statusCode===200?0:1)).on('error',()=>process.exit(1))"
ENTRYPOINT ["node", "dist/src/cli/cli.js"]
