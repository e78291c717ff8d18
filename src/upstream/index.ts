// The upstream client: the one way to the FHIR server (SPEC §2 settings, §5 failures).
export { UpstreamError, isUpstreamError, upstreamFailure, type UpstreamFailureWording, type UpstreamRefusalPolicy, type UpstreamErrorCode, type UpstreamErrorStatus } from './errors.ts';
export {
  createUpstreamClient,
  isJsonContentType,
  upstreamResource,
  type UpstreamJson,
  DEFAULT_UPSTREAM_MAX_BYTES,
  DEFAULT_UPSTREAM_TIMEOUT_MS,
  type SearchAllOptions,
  type SearchAllResult,
  type UpstreamClient,
  type UpstreamClientOptions,
  type UpstreamRequestOptions,
  type UpstreamResponse,
  type UpstreamStream,
} from './client.ts';
export { originRequestTarget, parseUpstreamBase, rewriteUpstreamUrl, upstreamRequestTarget, type UpstreamBase } from './url.ts';
