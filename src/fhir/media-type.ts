/** The media type of a Content-Type (or of one Accept or _format entry): before any parameter, trimmed, lower-cased; '' when absent. */
export function mediaTypeOf(value: string | readonly string[] | undefined): string {
  return String(value ?? '').split(';')[0].trim().toLowerCase();
}
