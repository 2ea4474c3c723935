import type { ProgressView } from '../progress';

/** A determinate bar when the fraction is known, an animated one when it is not. */
export function ProgressBar({ view }: { view: ProgressView }) {
  const percent = view.fraction === null ? null : Math.round(view.fraction * 100);
  return (
    <div class="progress" data-testid="progress">
      <div
        class={percent === null ? 'progress-track indeterminate' : 'progress-track'}
        role="progressbar"
        aria-label={view.label}
        aria-valuemin={0}
        aria-valuemax={100}
        {...(percent === null ? {} : { 'aria-valuenow': percent })}
      >
        <div class="progress-fill" style={percent === null ? undefined : { width: `${percent}%` }} />
      </div>
      <span class="progress-label">{view.label}{percent === null ? '' : ` (${percent}%)`}</span>
    </div>
  );
}
