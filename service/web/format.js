// Numbers and durations in words, one way for the whole run view. One Intl.NumberFormat for
// the page: `toLocaleString` builds one per call, which cost more than drawing a delta.

const numbers = new Intl.NumberFormat("en-US");

export const number = (value) => numbers.format(value);

export function seconds(value) {
  if (value < 10) return `${value.toFixed(2)} s`;
  if (value < 120) return `${value.toFixed(1)} s`;
  const minutes = Math.floor(value / 60);
  return `${minutes} min ${Math.round(value - minutes * 60)} s`;
}
