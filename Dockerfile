# Production image: compiled JavaScript, production dependencies only, non-root.
FROM node:26-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npx tsc -p tsconfig.build.json

FROM node:26-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts

FROM node:26-slim
ENV NODE_ENV=production HOST=0.0.0.0 PORT=8080 AUDIT_DIR=/var/lib/disclosure-gateway/audit DATA_DIR=/var/lib/disclosure-gateway
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY bin ./bin
COPY profiles ./profiles
COPY fixtures ./fixtures
COPY src/decide/terminology ./dist/decide/terminology
COPY src/label/rules ./dist/label/rules
COPY src/console/static ./dist/console/static
# The trimmed R4 definitions (src/fhir/definitions.ts): ~45 MB less resident memory per process.
RUN node bin/disclosure-gateway.js prepare-definitions
RUN mkdir -p /var/lib/disclosure-gateway/audit && chown -R node:node /var/lib/disclosure-gateway
USER node
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s CMD node -e "fetch('http://127.0.0.1:'+(process.env.PORT||8080)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
ENTRYPOINT ["node", "--max-old-space-size=160", "--max-semi-space-size=32", "--v8-pool-size=1", "--heap-growing-percent=150", "bin/disclosure-gateway.js"]
CMD ["serve"]
